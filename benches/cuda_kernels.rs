//! Every CUDA kernel alone, at GPT-XL widths (dim 1280, 20 heads of 64, FFN 3584, vocab 16384,
//! 576 image tokens), with the work it does as criterion throughput: bytes moved for
//! memory-bound kernels, FLOPs (as "elements") for GEMMs. Before each criterion run it times 50
//! back-to-back launches and prints the achieved rate against the H100 SXM ceilings
//! (3.35 TB/s HBM3, ~989 TFLOP/s dense bf16). Without a GPU it prints "skipped" and measures
//! nothing. Run: `cargo bench --features cuda --bench cuda_kernels`.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use spire::backend::cuda::has_precompiled;
use spire::backend::gpu::GpuBuf;
use spire::backend::{Backend, BlockInputs, BlockLayout, ChildDraws, CudaBackend, ForwardPlan, KvDtype, KvShape, LogitsMap, Packed, RowGather};
use spire::kv::{PagedKvCache, QueryVisibility};
use spire::sampling::Rng;
use spire::weights::synthetic::normal;

/// H100 SXM HBM3 bandwidth, bytes/s.
const HBM_BYTES_PER_S: f64 = 3.35e12;
/// H100 SXM dense bf16 tensor-core peak, FLOP/s.
const BF16_FLOPS: f64 = 989e12;

/// What one launch does.
#[derive(Clone, Copy)]
enum Work {
    /// Bytes read plus written.
    Bytes(u64),
    /// Floating-point operations.
    Flops(u64),
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| normal(&mut rng)).collect()
}

fn buf(gpu: &CudaBackend, len: usize, seed: u64) -> GpuBuf<spire::backend::cuda::CudaDriver> {
    gpu.upload(&random(len, seed)).expect("upload")
}

/// Time `op` (50 launches, one sync), print the rate against the H100 ceiling, then let
/// criterion measure it (one sync per iteration, so launch latency is included).
fn bench(c: &mut Criterion, gpu: &CudaBackend, name: &str, work: Work, mut op: impl FnMut()) {
    const LAUNCHES: u32 = 50;
    op();
    gpu.synchronize().expect("sync");
    let start = Instant::now();
    for _ in 0..LAUNCHES {
        op();
    }
    gpu.synchronize().expect("sync");
    let secs = start.elapsed().as_secs_f64() / f64::from(LAUNCHES);
    let (rate, ceiling, unit) = match work {
        Work::Bytes(b) => (b as f64 / secs, HBM_BYTES_PER_S, "GB/s"),
        Work::Flops(f) => (f as f64 / secs, BF16_FLOPS, "GFLOP/s"),
    };
    println!("{name:<32} {:>9.2} us  {:>10.1} {unit}  {:>5.1}% of H100 ceiling", secs * 1e6, rate / 1e9, 100.0 * rate / ceiling);
    let mut group = c.benchmark_group("cuda");
    group.throughput(match work {
        Work::Bytes(b) => Throughput::Bytes(b),
        Work::Flops(f) => Throughput::Elements(f),
    });
    group.bench_function(name, |b| {
        b.iter(|| {
            op();
            gpu.synchronize().expect("sync");
        })
    });
    group.finish();
}

/// Row-wise and elementwise kernels for `rows` tokens.
fn row_kernels(c: &mut Criterion, gpu: &CudaBackend, rows: usize) {
    let (dim, hidden, n_head, head_dim) = (1280, 3584, 20, 64);
    let f = 4u64; // bytes per f32
    let (x, weight) = (buf(gpu, rows * dim, 1), gpu.weight_from_host(&random(dim, 2)).expect("weight"));
    let mut out = buf(gpu, rows * dim, 3);
    let mut residual = buf(gpu, rows * dim, 4);
    let row_bytes = (rows * dim) as u64 * f;
    bench(c, gpu, &format!("rms_norm/{rows}x{dim}"), Work::Bytes(2 * row_bytes), || gpu.rms_norm(&x, &weight, 1e-5, dim, &mut out).expect("rms_norm"));
    bench(c, gpu, &format!("add_rms_norm/{rows}x{dim}"), Work::Bytes(4 * row_bytes), || {
        gpu.add_rms_norm(&mut residual, &x, &weight, 1e-5, dim, &mut out).expect("add_rms_norm")
    });

    let (gate, up, mut act) = (buf(gpu, rows * hidden, 5), buf(gpu, rows * hidden, 6), buf(gpu, rows * hidden, 7));
    bench(c, gpu, &format!("swiglu/{rows}x{hidden}"), Work::Bytes(3 * (rows * hidden) as u64 * f), || gpu.swiglu(&gate, &up, &mut act).expect("swiglu"));

    let mut qkv = buf(gpu, rows * 3 * dim, 8);
    let table = buf(gpu, 577 * head_dim, 9);
    let positions: Vec<u32> = (0..rows as u32).map(|r| 1 + r % 576).collect();
    let plan = gpu.upload_plan(ForwardPlan::positions(&positions)).expect("plan");
    let rope_bytes = (rows * 2 * dim * 2) as u64 * f;
    bench(c, gpu, &format!("rope/{rows}x{n_head}x2"), Work::Bytes(rope_bytes), || {
        gpu.rope(&mut qkv, rows, 3 * dim, 2 * n_head, head_dim, &table, &plan).expect("rope")
    });

    let embeddings = gpu.weight_from_host(&random(16384 * dim, 10)).expect("table");
    let ids: Vec<u32> = (0..rows as u32).map(|r| r * 37 % 16384).collect();
    let out_rows: Vec<u32> = (0..rows as u32).collect();
    let gather = gpu.upload_plan(ForwardPlan::gather(&ids, &out_rows)).expect("plan");
    bench(c, gpu, &format!("embedding/{rows}x{dim}"), Work::Bytes(2 * row_bytes), || {
        gpu.embedding(&embeddings, &gather, 0, None, dim, &mut out).expect("embedding")
    });

    let mut packed = Packed::default();
    let rows_gather = RowGather::pack(&mut packed, &out_rows.iter().rev().copied().collect::<Vec<_>>());
    let gather_words = words(gpu, packed.words());
    bench(c, gpu, &format!("gather_rows/{rows}x{dim}"), Work::Bytes(2 * row_bytes), || {
        gpu.gather_rows(&x, dim, &gather_words, rows_gather, &mut out).expect("gather_rows")
    });
}

/// cuBLAS GEMMs of a decoder layer's qkv projection, f32 weights.
fn linear(c: &mut Criterion, gpu: &CudaBackend, rows: usize) {
    let (k, n) = (1280, 3 * 1280);
    let (x, w) = (buf(gpu, rows * k, 11), gpu.weight_from_host(&random(n * k, 12)).expect("weight"));
    let mut out = buf(gpu, rows * n, 13);
    let flops = 2 * (rows * k * n) as u64;
    println!("linear/{rows}x{k}x{n}: weight traffic {:.1} MB per launch", (n * k * 4) as f64 / 1e6);
    bench(c, gpu, &format!("linear_f32/{rows}x{k}x{n}"), Work::Flops(flops), || gpu.linear(&x, &w, rows, k, n, &mut out).expect("linear"));
}

/// KV append and paged attention: `seqs` sequences of 576 tokens, each with `nodes` query rows
/// (1: decode; 16: tree verification).
fn attention(c: &mut Criterion, gpu: &CudaBackend, seqs: usize, nodes: usize) {
    let (n_head, head_dim, ctx) = (20, 64, 576);
    let width = n_head * head_dim;
    let blocks_per_seq = (ctx + nodes).div_ceil(16);
    let shape = KvShape { n_layer: 1, num_blocks: seqs * blocks_per_seq, block_size: 16, n_head, head_dim, dtype: KvDtype::Bf16 };
    let mut cache: PagedKvCache<CudaBackend> = PagedKvCache::new(gpu, shape).expect("cache");
    let mut queries = Vec::new();
    let mut all_slots = Vec::new();
    for _ in 0..seqs {
        let seq = cache.add_sequence();
        all_slots.extend(cache.extend(gpu, seq, ctx + nodes).expect("extend"));
        queries.extend((0..nodes).map(|i| QueryVisibility { seq, prefix: ctx, window_start: ctx, window: (0..nodes).map(|j| j <= i).collect() }));
    }
    let kv = buf(gpu, all_slots.len() * 3 * width, 14);
    let kv_bytes = (all_slots.len() * 4 * width) as u64 * 4;
    let slots = gpu.upload_plan(ForwardPlan::slots(&all_slots)).expect("plan");
    bench(c, gpu, &format!("kv_write/{}rows", all_slots.len()), Work::Bytes(kv_bytes), || {
        gpu.kv_write(cache.pool_mut(), 0, &kv, &slots).expect("kv_write")
    });
    let plan = gpu.upload_plan(ForwardPlan::layout(cache.layout(&queries).expect("layout"))).expect("plan");
    let qkv = buf(gpu, queries.len() * 3 * width, 15);
    let mut out = buf(gpu, queries.len() * width, 16);
    // K and V of every visible key, read once per query row.
    let bytes = (queries.len() * 2 * (ctx + nodes) * width) as u64 * 4;
    bench(c, gpu, &format!("attention/{seqs}seq_{nodes}q_ctx{ctx}"), Work::Bytes(bytes), || {
        gpu.attention(&qkv, cache.pool(), 0, &plan, &mut out).expect("attention")
    });
}

/// The fused acceptance kernel for `batch` chains of `nodes` drafts over a 16384 vocabulary.
fn accept(c: &mut Criterion, gpu: &CudaBackend, batch: usize, nodes: usize) {
    let vocab = 16384;
    let uniform = |seed: u64, len: usize| -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.uniform() as f32).collect()
    };
    let probs: Vec<f32> = uniform(17, batch * (nodes + 1) * vocab).iter().map(|u| u / vocab as f32 * 2.0).collect();
    let (p, q) = (gpu.upload(&probs).expect("p"), gpu.upload(&probs).expect("q"));
    let tokens: Vec<u32> = (0..(batch * nodes) as u32).map(|i| i * 7919 % vocab as u32).collect();
    let parents: Vec<i32> = (0..batch).flat_map(|_| -1..nodes as i32 - 1).collect();
    let (omega, u_accept, u_sample) = (vec![1.0; nodes], uniform(18, batch * nodes), uniform(19, batch));
    let inputs = BlockInputs { batch, nodes, vocab, parents: &parents, omega: &omega, u_accept: &u_accept, u_sample: &u_sample };
    let mut packed = Packed::default();
    let block = BlockLayout::pack(&mut packed, &inputs, 0, tokens.len()).expect("layout");
    let plan = words(gpu, packed.words());
    let mut state = words(gpu, &[tokens, vec![0; block.state_end() - batch * nodes]].concat());
    // Upper bound: p and q of every slot read once (p = q here, so every draft is accepted).
    let bytes = (2 * batch * (nodes + 1) * vocab * 4) as u64;
    bench(c, gpu, &format!("accept_block/{batch}x{nodes}"), Work::Bytes(bytes), || {
        gpu.accept_block(&p, &q, &plan, &block, &mut state).expect("accept_block");
    });
}

/// The children of one tree level drawn without replacement: `parents` distributions of vocab
/// 16384, `width` children each. Bytes: each distribution read once per child (the draw scans
/// it), tokens written.
fn children(c: &mut Criterion, gpu: &CudaBackend, parents: usize, width: usize) {
    let vocab = 16384;
    let probs = gpu.upload(&vec![1.0 / vocab as f32; parents * vocab]).expect("probs");
    let rows: Vec<u32> = (0..parents as u32).collect();
    let first: Vec<u32> = (0..parents as u32).map(|i| i * width as u32).collect();
    let mut rng = Rng::new(22);
    let uniforms: Vec<f32> = (0..parents * width).map(|_| rng.uniform() as f32).collect();
    let mut packed = Packed::default();
    let draws = ChildDraws::pack(&mut packed, vocab, width, &rows, &first, &uniforms).expect("draws");
    let (plan, mut tokens) = (words(gpu, packed.words()), gpu.words(parents * width).expect("tokens"));
    let bytes = (parents * width * vocab * 4) as u64;
    bench(c, gpu, &format!("sample_children/{parents}x{width}"), Work::Bytes(bytes), || {
        gpu.sample_children(&probs, &plan, draws, &mut tokens).expect("sample_children");
    });
}

/// `values` uploaded as words.
fn words(gpu: &CudaBackend, values: &[u32]) -> spire::backend::gpu::GpuWords<spire::backend::cuda::CudaDriver> {
    let mut words = gpu.words(0).expect("words");
    gpu.upload_words_into(&mut words, values).expect("upload");
    words
}

/// Logits processing for `batch` sequences of a draft block of `slots` positions (GPT-XL:
/// 1 + 8) with CFG: `2 * batch * slots` logits rows of vocab 16384 in, `batch * slots`
/// distributions out; plain temperature sampling, then with top-k 1000 and top-p 0.9 (about 30
/// more passes over each row, see kernels/sampling.cu). Bytes: logits read once, output written
/// once (the row re-reads stay in L1/L2).
fn sampling(c: &mut Criterion, gpu: &CudaBackend, batch: usize, slots: usize) {
    use spire::sampling::SamplingParams;
    let (vocab, rows_out) = (16384, batch * slots);
    let logits = gpu.upload(&random(2 * rows_out * vocab, 20).iter().map(|v| 3.0 * v).collect::<Vec<_>>()).expect("logits");
    let (cond, uncond): (Vec<u32>, Vec<u32>) = ((0..rows_out as u32).collect(), (rows_out as u32..2 * rows_out as u32).collect());
    let mut packed = Packed::default();
    let map = LogitsMap::pack(&mut packed, vocab, &cond, Some(&uncond), &cond, 0).expect("map");
    let plan = words(gpu, packed.words());
    let mut probs = buf(gpu, rows_out * vocab, 21);
    let mut flags = gpu.words(rows_out).expect("flags");
    let bytes = (3 * rows_out * vocab * 4) as u64;
    for (tag, params) in [
        ("cfg", SamplingParams { cfg_scale: 4.0, ..Default::default() }),
        ("cfg_topk_topp", SamplingParams { cfg_scale: 4.0, top_k: 1000, top_p: 0.9, temperature: 1.0 }),
    ] {
        bench(c, gpu, &format!("process_logits/{rows_out}x{vocab}_{tag}"), Work::Bytes(bytes), || {
            gpu.process_logits(&logits, &plan, map, &params, &mut probs, &mut flags).expect("process_logits");
        });
    }
}

fn cuda_kernels(c: &mut Criterion) {
    let gpu = match CudaBackend::new(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    println!("{} (precompiled PTX: sm_80 {}, sm_90 {})", gpu.name(), has_precompiled("sm_80"), has_precompiled("sm_90"));
    for rows in [2, 64] {
        row_kernels(c, &gpu, rows);
        linear(c, &gpu, rows);
    }
    attention(c, &gpu, 8, 1);
    attention(c, &gpu, 2, 16);
    accept(c, &gpu, 8, 8);
    children(c, &gpu, 16, 4);
    sampling(c, &gpu, 1, 1 + 8);
}

criterion_group!(benches, cuda_kernels);
criterion_main!(benches);
