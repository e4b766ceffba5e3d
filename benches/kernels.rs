//! Microbenchmarks of single backend ops on the CPU backend, with the work each one does
//! reported as criterion throughput (bytes moved for memory-bound ops, elements for GEMMs).
//! GPU kernels get the same benches on the CUDA backend.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use spire::backend::{Backend, CpuBackend, ForwardPlan, KvDtype, KvShape};
use spire::kv::{PagedKvCache, QueryVisibility};
use spire::sampling::Rng;
use spire::weights::synthetic::normal;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| normal(&mut rng)).collect()
}

/// GEMM `[rows, k] · [n, k]ᵀ` at GPT-B/XL widths, for decode (1-2 rows) and verification (16 rows).
fn linear(c: &mut Criterion) {
    let be = CpuBackend;
    let mut group = c.benchmark_group("linear");
    for &(rows, k, n) in &[(2, 768, 2304), (16, 768, 2304), (2, 1280, 3840), (16, 1280, 3840)] {
        let x = random(rows * k, 1);
        let w = be.weight_from_host(&random(n * k, 2)).unwrap();
        let mut out = be.zeros(rows * n).unwrap();
        // Weight bytes dominate the traffic at these row counts.
        group.throughput(Throughput::Bytes((n * k * 4) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(format!("{rows}x{k}x{n}")), &(), |b, _| {
            b.iter(|| be.linear(&x, &w, rows, k, n, &mut out).unwrap())
        });
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

criterion_group!(benches, linear, rms_norm, attention);
criterion_main!(benches);
