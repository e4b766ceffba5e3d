//! Every CUDA kernel alone, at GPT-XL widths (dim 1280, 20 heads of 64, FFN 3584, vocab 16384,
//! 576 image tokens), with the work it does as criterion throughput: bytes moved for
//! memory-bound kernels, FLOPs (as "elements") for GEMMs. Before each criterion run it times 50
//! back-to-back launches and prints the achieved rate against the H100 SXM ceilings
//! (3.35 TB/s HBM3, ~989 TFLOP/s dense bf16). Without a GPU it prints "skipped" and measures
//! nothing. Run: `cargo bench --features cuda --bench cuda_kernels`.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use spire::backend::cuda::has_precompiled;
use spire::backend::gpu::cost::{self, Ceilings, Cost, H100_SXM, H200};
use spire::backend::gpu::{GemmShape, GpuBuf};
use spire::backend::{Backend, BlockInputs, BlockLayout, ChildDraws, CudaBackend, ForwardPlan, KvDtype, KvShape, LogitsMap, Packed, RmsNorm, RowGather};
use spire::kv::{PagedKvCache, QueryVisibility};
use spire::sampling::Rng;
use spire::weights::synthetic::{normal, write_safetensors, HostTensor};
use spire::weights::{DType, WeightFile};

/// The ceilings of the GPU the bench runs on (an H200 by its name, else an H100).
fn ceilings(gpu: &CudaBackend) -> Ceilings {
    if gpu.name().contains("H200") {
        H200
    } else {
        H100_SXM
    }
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| normal(&mut rng)).collect()
}

fn buf(gpu: &CudaBackend, len: usize, seed: u64) -> GpuBuf<spire::backend::cuda::CudaDriver> {
    gpu.upload(&random(len, seed)).expect("upload")
}

/// Time `op` (50 launches, one sync), print it next to the cost model's prediction (launched by
/// the host) and its bandwidth against the HBM ceiling, then let criterion measure it (one sync
/// per iteration, so launch latency is included).
fn bench(c: &mut Criterion, gpu: &CudaBackend, name: &str, work: Cost, mut op: impl FnMut()) {
    const LAUNCHES: u32 = 50;
    let ceil = ceilings(gpu);
    op();
    gpu.synchronize().expect("sync");
    let start = Instant::now();
    for _ in 0..LAUNCHES {
        op();
    }
    gpu.synchronize().expect("sync");
    let secs = start.elapsed().as_secs_f64() / f64::from(LAUNCHES);
    let model = work.time(&ceil, false);
    println!(
        "{name:<32} {:>9.2} us measured {:>9.2} us model ({:>4.2}x)  {:>8.1} GB/s  {:>5.1}% of {} HBM",
        secs * 1e6,
        model * 1e6,
        secs / model,
        work.bytes / secs / 1e9,
        100.0 * work.bytes / secs / ceil.hbm_bytes_per_s,
        ceil.name
    );
    let mut group = c.benchmark_group("cuda");
    group.throughput(Throughput::Bytes(work.bytes as u64));
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
    let (x, weight) = (buf(gpu, rows * dim, 1), gpu.weight_from_host(&random(dim, 2)).expect("weight"));
    let mut out = buf(gpu, rows * dim, 3);
    bench(c, gpu, &format!("rms_norm/{rows}x{dim}"), cost::rms_norm(rows, dim), || gpu.rms_norm(&x, &weight, 1e-5, dim, &mut out).expect("rms_norm"));

    let (gate, up, mut act) = (buf(gpu, rows * hidden, 5), buf(gpu, rows * hidden, 6), buf(gpu, rows * hidden, 7));
    bench(c, gpu, &format!("swiglu/{rows}x{hidden}"), cost::elementwise(rows * hidden, 2), || gpu.swiglu(&gate, &up, &mut act).expect("swiglu"));

    let mut qkv = buf(gpu, rows * 3 * dim, 8);
    let table = buf(gpu, 577 * head_dim, 9);
    let positions: Vec<u32> = (0..rows as u32).map(|r| 1 + r % 576).collect();
    let plan = gpu.upload_plan(ForwardPlan::positions(&positions)).expect("plan");
    bench(c, gpu, &format!("rope/{rows}x{n_head}x2"), cost::rope(rows, dim), || {
        gpu.rope(&mut qkv, rows, 3 * dim, 2 * n_head, head_dim, &table, &plan).expect("rope")
    });

    let embeddings = gpu.weight_from_host(&random(16384 * dim, 10)).expect("table");
    let ids: Vec<u32> = (0..rows as u32).map(|r| r * 37 % 16384).collect();
    let out_rows: Vec<u32> = (0..rows as u32).collect();
    let gather = gpu.upload_plan(ForwardPlan::gather(&ids, &out_rows)).expect("plan");
    bench(c, gpu, &format!("embedding/{rows}x{dim}"), cost::embedding(rows, dim, 4.0), || {
        gpu.embedding(&embeddings, &gather, 0, None, dim, &mut out).expect("embedding")
    });

    let mut packed = Packed::default();
    let rows_gather = RowGather::pack(&mut packed, &out_rows.iter().rev().copied().collect::<Vec<_>>());
    let gather_words = words(gpu, packed.words());
    bench(c, gpu, &format!("gather_rows/{rows}x{dim}"), cost::elementwise(rows * dim, 1), || {
        gpu.gather_rows(&x, dim, &gather_words, rows_gather, &mut out).expect("gather_rows")
    });
}

/// A decoder layer's qkv projection: cuBLAS with f32 weights, and bf16 weights (the skinny
/// kernel at decode row counts, cast + cuBLAS beyond).
fn linear(c: &mut Criterion, gpu: &CudaBackend, rows: usize) {
    let (k, n) = (1280, 3 * 1280);
    let (x, w) = (buf(gpu, rows * k, 11), gpu.weight_from_host(&random(n * k, 12)).expect("weight"));
    let mut out = buf(gpu, rows * n, 13);
    println!("linear/{rows}x{k}x{n}: weight traffic {:.1} MB per launch", (n * k * 4) as f64 / 1e6);
    bench(c, gpu, &format!("linear_f32/{rows}x{k}x{n}"), cost::gemm(rows, k, n, 4.0, 4.0), || gpu.linear(&x, &w, rows, k, n, &mut out).expect("linear"));
    let w16 = bf16_weight(gpu, n, k, 12);
    let skinny = rows <= spire::backend::gpu::geometry::SKINNY_ROWS as usize;
    let name = if skinny { "linear_bf16_skinny" } else { "linear_bf16_cublas" };
    // The model of the cast + cuBLAS path counts the GEMM only (its cast is another launch).
    bench(c, gpu, &format!("{name}/{rows}x{k}x{n}"), cost::gemm(rows, k, n, 2.0, if skinny { 4.0 } else { 2.0 }), || gpu.linear(&x, &w16, rows, k, n, &mut out).expect("linear"));
}

/// A decoder layer's feed-forward GEMMs with bf16 weights, the norm before them and their fused
/// epilogues (kernels/gemv.cu at decode row counts: the norm and SwiGLU over w1 and w3, the
/// residual add after w2).
fn feed_forward(c: &mut Criterion, gpu: &CudaBackend, rows: usize) {
    let (d, h) = (1280, 3584);
    let (w1, w3, w2) = (bf16_weight(gpu, h, d, 20), bf16_weight(gpu, h, d, 21), bf16_weight(gpu, d, h, 22));
    let (x, mut gate, mut up, mut act) = (buf(gpu, rows * d, 23), buf(gpu, rows * h, 24), buf(gpu, rows * h, 25), buf(gpu, rows * h, 26));
    let (mut projected, mut residual, mut normed) = (buf(gpu, rows * d, 27), buf(gpu, rows * d, 28), buf(gpu, rows * d, 29));
    let norm = gpu.weight_from_host(&random(d, 30)).expect("norm");
    bench(c, gpu, &format!("norm_linear_swiglu_bf16/{rows}x{d}x{h}"), cost::gemm_norm_swiglu(rows, d, h, 2.0), || {
        let norm = RmsNorm { weight: &norm, eps: 1e-5 };
        gpu.norm_linear_swiglu(&x, norm, [&w1, &w3], GemmShape { rows, k: d, n: h }, &mut normed, [&mut gate, &mut up], &mut act).expect("norm_linear_swiglu")
    });
    bench(c, gpu, &format!("linear_add_bf16/{rows}x{h}x{d}"), cost::gemm_add(rows, h, d, 2.0), || {
        gpu.linear_add(&act, &w2, GemmShape { rows, k: h, n: d }, &mut projected, &mut residual).expect("linear_add")
    });
}

/// A decoder layer's attention prologue for `rows` decoding rows with bf16 weights and KV: the
/// norm, the QKV GEMM, RoPE and the KV append (one kernel at decode row counts, kernels/gemv.cu).
fn attention_prologue(c: &mut Criterion, gpu: &CudaBackend, rows: usize) {
    let (n_head, head_dim) = (20, 64);
    let width = n_head * head_dim;
    let shape = KvShape { n_layer: 1, num_blocks: 4, block_size: 16, n_head, head_dim, dtype: KvDtype::Bf16 };
    let mut cache: PagedKvCache<CudaBackend> = PagedKvCache::new(gpu, shape).expect("cache");
    let seq = cache.add_sequence();
    let slots = cache.extend(gpu, seq, rows).expect("extend");
    let positions: Vec<u32> = (1..=rows as u32).collect();
    let plan = gpu.upload_plan(ForwardPlan { positions, slots, ..ForwardPlan::default() }).expect("plan");
    let (x, table, wqkv) = (buf(gpu, rows * width, 31), buf(gpu, 577 * head_dim, 32), bf16_weight(gpu, 3 * width, width, 33));
    let norm = gpu.weight_from_host(&random(width, 34)).expect("norm");
    let (mut normed, mut qkv) = (buf(gpu, rows * width, 35), buf(gpu, rows * 3 * width, 36));
    bench(c, gpu, &format!("norm_qkv_rope_kv_write_bf16/{rows}x{width}"), cost::norm_qkv_rope_kv_write(rows, width, 2.0, KvDtype::Bf16), || {
        let norm = RmsNorm { weight: &norm, eps: 1e-5 };
        gpu.norm_qkv_rope_kv_write(&x, norm, &wqkv, (rows, n_head, head_dim), &table, (cache.pool_mut(), 0), &plan, &mut normed, &mut qkv).expect("norm_qkv_rope_kv_write")
    });
}

/// A `[n, k]` weight of random values stored as bf16 (so the backend keeps it bf16).
fn bf16_weight(gpu: &CudaBackend, n: usize, k: usize, seed: u64) -> spire::backend::gpu::GpuWeight<spire::backend::cuda::CudaDriver> {
    let path = std::env::temp_dir().join(format!("spire-bench-bf16-{}-{seed}.safetensors", std::process::id()));
    let tensor = HostTensor { name: "w".into(), shape: vec![n, k], values: random(n * k, seed) };
    write_safetensors(&path, &[tensor], DType::BF16).expect("bf16 weights");
    let weight = gpu.load_weight(&std::sync::Arc::new(WeightFile::open(&path).expect("bf16 weights")), "w", &[n, k]).expect("bf16 weight");
    let _ = std::fs::remove_file(&path);
    weight
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
    let slots = gpu.upload_plan(ForwardPlan::slots(&all_slots)).expect("plan");
    bench(c, gpu, &format!("kv_write/{}rows", all_slots.len()), cost::kv_write(all_slots.len(), width, KvDtype::Bf16), || {
        gpu.kv_write(cache.pool_mut(), 0, &kv, &slots).expect("kv_write")
    });
    let positions: Vec<u32> = (0..all_slots.len() as u32).map(|r| 1 + r % 576).collect();
    let rope_slots = gpu.upload_plan(ForwardPlan { positions, slots: all_slots.clone(), ..ForwardPlan::default() }).expect("plan");
    let (mut rotated, table) = (buf(gpu, all_slots.len() * 3 * width, 14), buf(gpu, 577 * head_dim, 9));
    bench(c, gpu, &format!("rope_kv_write/{}rows", all_slots.len()), cost::rope_kv_write(all_slots.len(), width, KvDtype::Bf16), || {
        gpu.rope_kv_write(&mut rotated, all_slots.len(), n_head, head_dim, &table, cache.pool_mut(), 0, &rope_slots).expect("rope_kv_write")
    });
    let plan = gpu.upload_plan(ForwardPlan::layout(cache.layout(&queries).expect("layout"))).expect("plan");
    let qkv = buf(gpu, queries.len() * 3 * width, 15);
    let mut out = buf(gpu, queries.len() * width, 16);
    bench(c, gpu, &format!("attention/{seqs}seq_{nodes}q_ctx{ctx}"), cost::attention(cost::Queries::trees(seqs, nodes, ctx + nodes), width, KvDtype::Bf16), || {
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
    bench(c, gpu, &format!("accept_block/{batch}x{nodes}"), cost::accept(batch, nodes, vocab), || {
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
    bench(c, gpu, &format!("sample_children/{parents}x{width}"), cost::sample_children(parents, width, vocab), || {
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
    for (tag, params) in [
        ("cfg", SamplingParams { cfg_scale: 4.0, ..Default::default() }),
        ("cfg_topk_topp", SamplingParams { cfg_scale: 4.0, top_k: 1000, top_p: 0.9, temperature: 1.0 }),
    ] {
        bench(c, gpu, &format!("process_logits/{rows_out}x{vocab}_{tag}"), cost::process_logits(rows_out, vocab, true), || {
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
    // Decode row counts: AR with CFG, a verified chain of 4 with CFG.
    for rows in [2, 10] {
        attention_prologue(c, &gpu, rows);
        feed_forward(c, &gpu, rows);
    }
    attention(c, &gpu, 2, 1); // batch 1 with CFG: split over the keys
    attention(c, &gpu, 8, 1);
    attention(c, &gpu, 2, 16);
    accept(c, &gpu, 8, 8);
    children(c, &gpu, 16, 4);
    sampling(c, &gpu, 1, 1 + 8);
}

criterion_group!(benches, cuda_kernels);
criterion_main!(benches);
