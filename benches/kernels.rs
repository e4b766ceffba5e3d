//! Microbenchmarks of single CPU backend ops, with the work each one does reported as criterion
//! throughput (bytes moved).
//!
//! GEMMs at decode row counts are bound by streaming the weights, so `linear` times the
//! GPT-B/L/XL layer shapes at 1, 2, 16 and 64 rows over a ring of weight copies too large for the
//! caches (every call reads its weights from DRAM, as in a real decode step), then measures what
//! this machine can stream (a STREAM-like parallel read of a cache-sized and of a DRAM-sized
//! buffer) and prints each shape's GB/s next to it. `linear_isa` compares the
//! instruction-set paths of the GEMM kernel (the portable one forced) on cache-resident weights.
//! GPU kernels get the same benches on the CUDA backend.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;

use spire::backend::cpu::gemm::{linear_on, Isa};
use spire::backend::cpu::CpuWeight;
use spire::backend::{Backend, CpuBackend, ForwardPlan, KvDtype, KvShape};
use spire::kv::{PagedKvCache, QueryVisibility};
use spire::sampling::Rng;
use spire::weights::synthetic::{normal, write_safetensors, HostTensor};
use spire::weights::{DType, WeightFile};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| normal(&mut rng)).collect()
}

const GB: f64 = 1e9;
/// Bytes of weight copies the cold GEMM benches cycle through, so that every call reads DRAM:
/// 256 MiB, or twice the last-level cache where that is larger (a cyclic walk over twice the
/// cache misses it every time).
fn ring_bytes() -> usize {
    (256 << 20).max(2 * last_level_cache_bytes())
}

/// This machine's L3 (or last-level) cache in bytes, from sysfs (Linux); 32 MiB where unknown.
fn last_level_cache_bytes() -> usize {
    let size = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size").unwrap_or_default();
    let size = size.trim();
    let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
    let scale = match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => 1,
    };
    digits.parse::<usize>().map_or(32 << 20, |n| n * scale)
}
/// Activation rows of the GEMM benches: decode (1 image, 1 image with CFG) and verification.
const ROWS: [usize; 4] = [1, 2, 16, 64];

/// Read bandwidth in GB/s of rayon's threads summing `bytes` of f32 in 2 MiB blocks taken as
/// they come (as the GEMM's column chunks are, so a thread slowed by other jobs takes fewer),
/// each block read as `streams` (1 or 4) interleaved sequential streams; best of a few passes.
fn read_bandwidth(bytes: usize, streams: usize) -> f64 {
    let values = vec![1.0f32; bytes / 4];
    let passes = (1usize << 30).div_ceil(bytes).clamp(3, 200);
    let mut best = f64::INFINITY;
    for _ in 0..passes {
        let start = Instant::now();
        let total: f32 = values.par_chunks(1 << 19).map(|block| sum_streams(block, streams)).sum();
        best = best.min(start.elapsed().as_secs_f64());
        assert!(total > 0.0);
    }
    bytes as f64 / best / GB
}

/// The sum of `values`, read as `streams` (1 or 4) equal parts side by side, sixteen lanes
/// each, so the loads, not the adds, set the pace.
fn sum_streams(values: &[f32], streams: usize) -> f32 {
    if streams == 1 {
        return sum_lanes(values);
    }
    let quarter = values.len() / 4;
    let (a, rest) = values.split_at(quarter);
    let (b, rest) = rest.split_at(quarter);
    let (c, d) = rest.split_at(quarter);
    let mut lanes = [[0f32; 16]; 4];
    for (((a, b), c), d) in a.chunks_exact(16).zip(b.chunks_exact(16)).zip(c.chunks_exact(16)).zip(d.chunks_exact(16)) {
        for i in 0..16 {
            lanes[0][i] += a[i];
            lanes[1][i] += b[i];
            lanes[2][i] += c[i];
            lanes[3][i] += d[i];
        }
    }
    lanes.iter().flatten().sum()
}

/// The sum of `values` in sixteen lanes.
fn sum_lanes(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for chunk in values.chunks_exact(16) {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum()
}

/// What this machine streams: from L3 (16 MiB, over the L2s, under the L3) and from DRAM.
struct Bandwidth {
    l3: f64,
    dram: f64,
}

impl Bandwidth {
    /// Read bandwidth of `bytes`, the better of one and four streams per thread.
    fn best_of_streams(bytes: usize) -> f64 {
        [1, 4].map(|streams| read_bandwidth(bytes, streams)).into_iter().fold(0.0, f64::max)
    }

    /// Bandwidth from L3 (16 MiB) and from DRAM (1 GiB).
    fn measure() -> Self {
        let bandwidth = Bandwidth { l3: Bandwidth::best_of_streams(16 << 20), dram: Bandwidth::best_of_streams(1 << 30) };
        println!(
            "read bandwidth ({} threads, best of 1 and 4 streams each): L3 (16 MiB) {:.1} GB/s, DRAM (1 GiB) {:.1} GB/s",
            rayon::current_num_threads(),
            bandwidth.l3,
            bandwidth.dram
        );
        bandwidth
    }
}

/// A `[n, k]` weight in the CPU backend, loaded from a safetensors file of `dtype` as a model's
/// weights are (f32 in place from the mapping, 16-bit kept 16-bit).
fn load_weights(n: usize, k: usize, dtype: DType, copies: usize) -> Vec<CpuWeight> {
    let dir = std::env::temp_dir().join(format!("spire-bench-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("w{n}x{k}-{dtype:?}.safetensors"));
    write_safetensors(&path, &[HostTensor { name: "w".into(), shape: vec![n, k], values: random(n * k, 2) }], dtype).unwrap();
    // Each copy its own file mapping, so f32 copies occupy distinct pages too.
    let weights = (0..copies)
        .map(|_| CpuBackend.load_weight(&Arc::new(WeightFile::open(&path).unwrap()), "w", &[n, k]).unwrap())
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    weights
}

/// One line of the summary printed after the cold GEMM benches.
struct SummaryRow {
    name: String,
    bytes: usize,
    seconds: f64,
    /// DRAM read bandwidth measured just before this shape's benches, GB/s.
    dram: f64,
}

/// Time `f` with criterion and also return the median seconds per call over its samples (`None`
/// when a filter skipped it).
fn bench_median(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, id: BenchmarkId, mut f: impl FnMut()) -> Option<f64> {
    let samples = RefCell::new(Vec::new());
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            let elapsed = start.elapsed();
            samples.borrow_mut().push(elapsed.as_secs_f64() / iters as f64);
            elapsed
        })
    });
    let mut samples = samples.into_inner();
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied()
}

/// The layer GEMMs of a LlamaGen model of width `dim` and FFN width `hidden`: `(name, n, k)`.
fn layer_shapes(dim: usize, hidden: usize) -> [(&'static str, usize, usize); 4] {
    [("qkv", 3 * dim, dim), ("ffn_up", hidden, dim), ("ffn_down", dim, hidden), ("output", 16384, dim)]
}

/// GEMM `[rows, k] · [n, k]ᵀ` at GPT-B/L/XL shapes with weights streamed from DRAM.
fn linear(c: &mut Criterion) {
    let be = CpuBackend;
    let mut summary = Vec::new();
    let mut group = c.benchmark_group("linear");
    let ring_size = ring_bytes();
    println!("weights cycle through {} MiB (last-level cache {} MiB)", ring_size >> 20, last_level_cache_bytes() >> 20);
    for (model, dim, hidden) in [("B", 768, 2048), ("L", 1024, 2816), ("XL", 1280, 3584)] {
        for (shape, n, k) in layer_shapes(dim, hidden) {
            for dtype in [DType::F32, DType::F16] {
                let bytes = n * k * if dtype == DType::F32 { 4 } else { 2 };
                let ring = load_weights(n, k, dtype, ring_size.div_ceil(bytes).max(2));
                // The machine's bandwidth right now (other jobs on a shared VM move it a lot),
                // so each ratio compares two numbers measured within seconds of each other.
                let dram = Bandwidth::best_of_streams(ring_size);
                for rows in ROWS {
                    let x = random(rows * k, 1);
                    let mut out = be.zeros(rows * n).unwrap();
                    // Any one-time preparation of a weight (packing) happens before timing.
                    ring.iter().for_each(|w| be.linear(&x, w, rows, k, n, &mut out).unwrap());
                    let mut next = 0;
                    let name = format!("{model}-{shape}-{dtype:?}/{rows}x{k}x{n}");
                    group.throughput(Throughput::Bytes(bytes as u64));
                    let seconds = bench_median(&mut group, BenchmarkId::from_parameter(&name), || {
                        be.linear(&x, &ring[next], rows, k, n, &mut out).unwrap();
                        next = (next + 1) % ring.len();
                    });
                    if let Some(seconds) = seconds {
                        summary.push(SummaryRow { name, bytes, seconds, dram });
                    }
                }
            }
        }
    }
    group.finish();
    if !summary.is_empty() {
        print_summary(&Bandwidth::measure(), &summary);
    }
}

fn print_summary(bandwidth: &Bandwidth, rows: &[SummaryRow]) {
    println!("\nGEMM weight bandwidth, weights from DRAM (now: L3 {:.1} GB/s, DRAM {:.1} GB/s)", bandwidth.l3, bandwidth.dram);
    println!(
        "{:<36} {:>7} {:>10} {:>7} {:>11} {:>7}",
        "shape (model-layer-dtype/rows x k x n)", "MB", "time µs", "GB/s", "DRAM GB/s*", "% DRAM"
    );
    for row in rows {
        let gbs = row.bytes as f64 / row.seconds / GB;
        println!(
            "{:<36} {:>7.1} {:>10.1} {:>7.1} {:>11.1} {:>6.0}%",
            row.name,
            row.bytes as f64 / 1e6,
            row.seconds * 1e6,
            gbs,
            row.dram,
            100.0 * gbs / row.dram
        );
    }
    println!("* DRAM read bandwidth measured just before that shape's benches.");
}

/// The GEMM kernel on each instruction set this CPU has (the portable path forced), GPT-XL qkv
/// with cache-resident weights, f32 and f16.
fn linear_isa(c: &mut Criterion) {
    let (n, k) = (3 * 1280, 1280);
    let mut group = c.benchmark_group("linear_isa");
    for dtype in [DType::F32, DType::F16] {
        let weight = load_weights(n, k, dtype, 1).pop().unwrap();
        let packed = weight.packed(n, k).unwrap();
        let bytes = packed.bytes();
        for rows in [2, 16] {
            let x = random(rows * k, 1);
            let mut out = vec![0.0; rows * n];
            group.throughput(Throughput::Bytes(bytes as u64));
            for &isa in Isa::available() {
                let id = BenchmarkId::new(format!("{isa:?}-{dtype:?}"), format!("{rows}x{k}x{n}"));
                group.bench_function(id, |b| b.iter(|| linear_on(isa, &x, packed, rows, &mut out)));
            }
        }
    }
    group.finish();
}

/// The GEMMs of one whole target forward (every layer's qkv, wo, w1, w3, w2, then the output
/// layer; f16 weights, as the demo ships), at 2 rows (AR with CFG) and 10 rows (a chain of 4 plus
/// the bonus, with CFG: what vanilla/COOL-SD/LANTERN verify): for the demo model, whose weights
/// sit in L3, and for GPT-B, whose weights stream from DRAM. Speculative decoding pays off when
/// 10 rows cost less than (AR forwards / verification forwards) times 2 rows.
fn linear_forward(c: &mut Criterion) {
    let be = CpuBackend;
    let mut group = c.benchmark_group("linear_forward");
    for (model, dim, hidden, layers, vocab) in [("demo", 256, 688, 6, 1000), ("GPT-B", 768, 2048, 12, 16384)] {
        let mut shapes: Vec<(usize, usize)> = (0..layers).flat_map(|_| [(3 * dim, dim), (dim, dim), (hidden, dim), (hidden, dim), (dim, hidden)]).collect();
        shapes.push((vocab, dim));
        let weights: Vec<CpuWeight> = shapes.iter().map(|&(n, k)| load_weights(n, k, DType::F16, 1).pop().unwrap()).collect();
        let bytes: usize = shapes.iter().map(|&(n, k)| 2 * n * k).sum();
        for rows in [2, 10] {
            let x = random(rows * hidden, 1);
            let mut out = be.zeros(rows * vocab.max(3 * dim).max(hidden)).unwrap();
            let forward = |out: &mut Vec<f32>| {
                for (w, &(n, k)) in weights.iter().zip(&shapes) {
                    be.linear(&x, w, rows, k, n, out).unwrap();
                }
            };
            forward(&mut out);
            group.throughput(Throughput::Bytes(bytes as u64));
            group.bench_function(BenchmarkId::new(model, format!("{rows}rows")), |b| b.iter(|| forward(&mut out)));
        }
    }
    group.finish();
}

/// RMSNorm over `[rows, dim]`.
fn rms_norm(c: &mut Criterion) {
    let be = CpuBackend;
    let mut group = c.benchmark_group("rms_norm");
    for &(rows, dim) in &[(2, 1280), (64, 1280)] {
        let x = random(rows * dim, 3);
        let w = be.weight_from_host(&random(dim, 4)).unwrap();
        let mut out = be.zeros(rows * dim).unwrap();
        group.throughput(Throughput::Bytes((2 * rows * dim * 4 + dim * 4) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(format!("{rows}x{dim}")), &(), |b, _| {
            b.iter(|| be.rms_norm(&x, &w, 1e-5, dim, &mut out).unwrap())
        });
    }
    group.finish();
}

/// Paged decode attention (1 query per sequence) and tree verification attention (16 nodes)
/// against a 256-token context, GPT-XL head geometry (20 heads of 64).
fn attention(c: &mut Criterion) {
    let be = CpuBackend;
    let (n_head, head_dim, ctx_len) = (20, 64, 256);
    let width = n_head * head_dim;
    let mut group = c.benchmark_group("attention");
    for &nodes in &[1usize, 16] {
        let shape = KvShape { n_layer: 1, num_blocks: 32, block_size: 16, n_head, head_dim, dtype: KvDtype::F32 };
        let mut cache: PagedKvCache<CpuBackend> = PagedKvCache::new(&be, shape).unwrap();
        let seq = cache.add_sequence();
        let slots = cache.extend(&be, seq, ctx_len + nodes).unwrap();
        let qkv = random((ctx_len + nodes) * 3 * width, 5);
        be.kv_write(cache.pool_mut(), 0, &qkv, &ForwardPlan::slots(&slots)).unwrap();
        let queries: Vec<QueryVisibility> = (0..nodes)
            .map(|i| QueryVisibility { seq, prefix: ctx_len, window_start: ctx_len, window: (0..nodes).map(|j| j <= i).collect() })
            .collect();
        let plan = ForwardPlan::layout(cache.layout(&queries).unwrap());
        let q = random(nodes * 3 * width, 6);
        let mut out = be.zeros(nodes * width).unwrap();
        group.throughput(Throughput::Bytes((2 * (ctx_len + nodes) * width * 4) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(format!("{nodes}q-ctx{ctx_len}")), &(), |b, _| {
            b.iter(|| be.attention(&q, cache.pool(), 0, &plan, &mut out).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(10);
    targets = linear, linear_isa, linear_forward, rms_norm, attention
}
criterion_main!(benches);
