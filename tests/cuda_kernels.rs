//! Every CUDA kernel against its CPU twin on random inputs, outputs poisoned with NaN before
//! each run. Needs a GPU: without one (or without a driver) each test prints "skipped: <reason>"
//! and passes. Tolerances: relative L2 error 1e-4 for f32 kernels, 1e-2 for bf16 GEMMs; the fused
//! acceptance kernel must match `accept_reference` exactly.
#![cfg(feature = "cuda")]

use std::sync::{Arc, OnceLock};

use spire::backend::cuda::{accept_reference, DraftBlock};
use spire::backend::{AttentionLayout, Backend, CpuBackend, CudaBackend, KvShape};
use spire::kv::{PagedKvCache, QueryVisibility};
use spire::sampling::Rng;
use spire::weights::synthetic::{normal, write_safetensors, HostTensor};
use spire::weights::{DType, WeightFile};

/// The shared GPU backend, or `None` after printing why the test is skipped.
fn gpu() -> Option<&'static CudaBackend> {
    static GPU: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
    match GPU.get_or_init(|| CudaBackend::new(0).map_err(|e| e.to_string())) {
        Ok(gpu) => Some(gpu),
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| normal(&mut rng)).collect()
}

fn poisoned(gpu: &CudaBackend, len: usize) -> spire::backend::cuda::CudaBuf {
    gpu.upload(&vec![f32::NAN; len]).unwrap()
}

/// `||got - want|| / ||want||` must be below `tol` (and finite).
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let diff: f64 = got.iter().zip(want).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum::<f64>().sqrt().max(1e-30);
    let rel = diff / norm;
    assert!(rel <= tol, "{what}: relative error {rel:e} > {tol:e}");
}

#[test]
fn rms_norm_and_fused_residual_add() {
    let Some(gpu) = gpu() else { return };
    for &(rows, dim) in &[(7usize, 1280usize), (3, 100)] {
        let (x, w, res) = (random(rows * dim, 1), random(dim, 2), random(rows * dim, 3));
        let mut want = vec![0.0; rows * dim];
        CpuBackend.rms_norm(&x, &CpuBackend.weight_from_host(&w).unwrap(), 1e-5, dim, &mut want).unwrap();
        let mut out = poisoned(gpu, rows * dim);
        gpu.rms_norm(&gpu.upload(&x).unwrap(), &gpu.weight_from_host(&w).unwrap(), 1e-5, dim, &mut out).unwrap();
        assert_close("rms_norm", &gpu.download(&out).unwrap(), &want, 1e-4);

        let (mut res_cpu, mut want) = (res.clone(), vec![0.0; rows * dim]);
        CpuBackend.add_rms_norm(&mut res_cpu, &x, &CpuBackend.weight_from_host(&w).unwrap(), 1e-5, dim, &mut want).unwrap();
        let (mut res_gpu, mut out) = (gpu.upload(&res).unwrap(), poisoned(gpu, rows * dim));
        gpu.add_rms_norm(&mut res_gpu, &gpu.upload(&x).unwrap(), &gpu.weight_from_host(&w).unwrap(), 1e-5, dim, &mut out).unwrap();
        assert_close("add_rms_norm out", &gpu.download(&out).unwrap(), &want, 1e-4);
        assert_close("add_rms_norm residual", &gpu.download(&res_gpu).unwrap(), &res_cpu, 1e-6);
    }
}

#[test]
fn rope_rotates_q_and_k_heads() {
    let Some(gpu) = gpu() else { return };
    let (rows, n_head, head_dim, max_pos) = (5, 4, 64, 17);
    let stride = 3 * n_head * head_dim;
    let (x, table) = (random(rows * stride, 4), random(max_pos * head_dim, 5));
    let positions = [0u32, 3, 16, 7, 7];
    let mut want = x.clone();
    CpuBackend.rope(&mut want, rows, stride, 2 * n_head, head_dim, &table, &positions).unwrap();
    let mut got = gpu.upload(&x).unwrap();
    gpu.rope(&mut got, rows, stride, 2 * n_head, head_dim, &gpu.upload(&table).unwrap(), &positions).unwrap();
    assert_close("rope", &gpu.download(&got).unwrap(), &want, 1e-5);
}

#[test]
fn swiglu_add_and_concat() {
    let Some(gpu) = gpu() else { return };
    let n = 3 * 3584 + 17;
    let (g, u) = (random(n, 6), random(n, 7));
    let mut want = vec![0.0; n];
    CpuBackend.swiglu(&g, &u, &mut want).unwrap();
    let mut out = poisoned(gpu, n);
    gpu.swiglu(&gpu.upload(&g).unwrap(), &gpu.upload(&u).unwrap(), &mut out).unwrap();
    assert_close("swiglu", &gpu.download(&out).unwrap(), &want, 1e-5);

    let mut acc = gpu.upload(&g).unwrap();
    gpu.add_assign(&mut acc, &gpu.upload(&u).unwrap()).unwrap();
    let sum: Vec<f32> = g.iter().zip(&u).map(|(a, b)| a + b).collect();
    assert_close("add_assign", &gpu.download(&acc).unwrap(), &sum, 1e-7);

    let (rows, a_dim, b_dim) = (6, 96, 160);
    let (a, b) = (random(rows * a_dim, 8), random(rows * b_dim, 9));
    let mut want = vec![0.0; rows * (a_dim + b_dim)];
    CpuBackend.concat_rows(&a, a_dim, &b, b_dim, &mut want).unwrap();
    let mut out = poisoned(gpu, rows * (a_dim + b_dim));
    gpu.concat_rows(&gpu.upload(&a).unwrap(), a_dim, &gpu.upload(&b).unwrap(), b_dim, &mut out).unwrap();
    assert_eq!(gpu.download(&out).unwrap(), want);
}

/// A weights file holding `table [rows, dim]` as bf16 (so the GPU keeps it bf16).
fn bf16_file(values: &[f32], shape: &[usize], tag: &str) -> Arc<WeightFile> {
    let path = std::env::temp_dir().join(format!("spire-cuda-test-{tag}-{}.safetensors", std::process::id()));
    let tensor = HostTensor { name: "w".into(), shape: shape.to_vec(), values: values.to_vec() };
    write_safetensors(&path, &[tensor], DType::BF16).unwrap();
    Arc::new(WeightFile::open(&path).unwrap())
}

#[test]
fn embedding_gather_f32_and_bf16() {
    let Some(gpu) = gpu() else { return };
    let (rows, dim) = (50, 256);
    let table = random(rows * dim, 10);
    let ids = [3u32, 49, 0, 3, 17];
    let out_rows = [4u32, 2, 0, 1, 3];
    let file = bf16_file(&table, &[rows, dim], "embedding");
    for (cpu_w, gpu_w) in [
        (CpuBackend.weight_from_host(&table).unwrap(), gpu.weight_from_host(&table).unwrap()),
        (CpuBackend.load_weight(&file, "w", &[rows, dim]).unwrap(), gpu.load_weight(&file, "w", &[rows, dim]).unwrap()),
    ] {
        let mut want = vec![0.0; ids.len() * dim];
        CpuBackend.embedding(&cpu_w, &ids, &out_rows, dim, &mut want).unwrap();
        let mut out = poisoned(gpu, ids.len() * dim);
        gpu.embedding(&gpu_w, &ids, &out_rows, dim, &mut out).unwrap();
        assert_eq!(gpu.download(&out).unwrap(), want);
    }
}

#[test]
fn linear_f32_and_bf16() {
    let Some(gpu) = gpu() else { return };
    for &(rows, k, n) in &[(1usize, 768usize, 2304usize), (16, 1280, 3840), (3, 100, 37)] {
        let (x, w) = (random(rows * k, 11), random(n * k, 12));
        let mut want = vec![0.0; rows * n];
        CpuBackend.linear(&x, &CpuBackend.weight_from_host(&w).unwrap(), rows, k, n, &mut want).unwrap();
        let (x_dev, mut out) = (gpu.upload(&x).unwrap(), poisoned(gpu, rows * n));
        gpu.linear(&x_dev, &gpu.weight_from_host(&w).unwrap(), rows, k, n, &mut out).unwrap();
        assert_close("linear f32", &gpu.download(&out).unwrap(), &want, 1e-4);

        let file = bf16_file(&w, &[n, k], "linear");
        CpuBackend.linear(&x, &CpuBackend.load_weight(&file, "w", &[n, k]).unwrap(), rows, k, n, &mut want).unwrap();
        let mut out = poisoned(gpu, rows * n);
        gpu.linear(&x_dev, &gpu.load_weight(&file, "w", &[n, k]).unwrap(), rows, k, n, &mut out).unwrap();
        assert_close("linear bf16", &gpu.download(&out).unwrap(), &want, 1e-2);
    }
}

/// Three sequences in one pool: two decoding one token each (plain causal), one verifying a
/// 5-node draft tree; KV written with `kv_write`, one sequence forked (shared blocks,
/// copy-on-write through `kv_copy`) and a tree path compacted with `move_positions`.
fn attention_case<B: Backend>(be: &B, poison: impl Fn(usize) -> B::Buf) -> Vec<f32> {
    let (n_head, head_dim) = (4, 64);
    let width = n_head * head_dim;
    let shape = KvShape { n_layer: 2, num_blocks: 24, block_size: 16, n_head, head_dim };
    let mut cache: PagedKvCache<B> = PagedKvCache::new(be, shape).unwrap();
    let a = cache.add_sequence();
    let slots = cache.extend(be, a, 37).unwrap();
    be.kv_write(cache.pool_mut(), 1, &be.upload(&random(37 * 3 * width, 13)).unwrap(), &slots).unwrap();
    let b = cache.fork(a).unwrap();
    let slots = cache.extend(be, b, 40).unwrap(); // un-shares the tail block: kv_copy
    be.kv_write(cache.pool_mut(), 1, &be.upload(&random(3 * 3 * width, 14)).unwrap(), &slots).unwrap();
    let c = cache.add_sequence();
    let slots = cache.extend(be, c, 20 + 5).unwrap();
    be.kv_write(cache.pool_mut(), 1, &be.upload(&random(25 * 3 * width, 15)).unwrap(), &slots).unwrap();
    cache.move_positions(be, c, &[22, 24], &[21, 22]).unwrap(); // dependent copies
    let parents = [None, Some(0), Some(0), Some(1), Some(3)];
    let mut queries = vec![QueryVisibility::causal(a, 36), QueryVisibility::causal(b, 39)];
    for node in 0..parents.len() {
        let mut window = vec![false; parents.len()];
        let mut cur = Some(node);
        while let Some(n) = cur {
            window[n] = true;
            cur = parents[n];
        }
        queries.push(QueryVisibility { seq: c, prefix: 20, window_start: 20, window });
    }
    let layout: AttentionLayout = cache.layout(&queries).unwrap();
    let mut out = poison(queries.len() * width);
    let qkv = be.upload(&random(queries.len() * 3 * width, 16)).unwrap();
    be.attention(&qkv, cache.pool(), 1, &layout, &mut out).unwrap();
    be.download(&out).unwrap()
}

#[test]
fn paged_attention_decode_and_tree_verification() {
    let Some(gpu) = gpu() else { return };
    let want = attention_case(&CpuBackend, |len| vec![f32::NAN; len]);
    let got = attention_case(gpu, |len| poisoned(gpu, len));
    assert_close("attention", &got, &want, 1e-4);
}

/// Softmax of random logits at temperature `t`, `rows` rows of `vocab`.
fn distributions(rows: usize, vocab: usize, t: f32, seed: u64) -> Vec<f32> {
    let logits = random(rows * vocab, seed);
    logits
        .chunks(vocab)
        .flat_map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|&l| ((l - max) / t).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.into_iter().map(move |v| v / sum)
        })
        .collect()
}

#[test]
fn fused_acceptance_matches_its_cpu_twin_exactly() {
    let Some(gpu) = gpu() else { return };
    let (batch, vocab) = (5, 16384);
    let mut rng = Rng::new(17);
    // A chain of 4 and a tree (two children of the root, two of node 0, one of node 2).
    for parents_one in [vec![-1, 0, 1, 2], vec![-1, -1, 0, 0, 2]] {
        let nodes = parents_one.len();
        let p = distributions(batch * (nodes + 1), vocab, 0.5, 18);
        let q = distributions(batch * (nodes + 1), vocab, 0.7, 19);
        let tokens: Vec<u32> = (0..batch * nodes).map(|_| rng.below(64) as u32).collect();
        let parents = parents_one.repeat(batch);
        let u_accept: Vec<f32> = (0..batch * nodes).map(|_| rng.uniform() as f32).collect();
        let u_sample: Vec<f32> = (0..batch).map(|_| rng.uniform() as f32).collect();
        for omega in [vec![1.0; nodes], vec![3.0, 2.0, 1.5, 1.0, 1.0][..nodes].to_vec(), vec![1e4; nodes]] {
            let block = DraftBlock { batch, nodes, vocab, tokens: &tokens, parents: &parents, omega: &omega, u_accept: &u_accept, u_sample: &u_sample };
            let want = accept_reference::accept_block(&p, &q, &block).unwrap();
            let got = gpu.accept_block(&gpu.upload(&p).unwrap(), &gpu.upload(&q).unwrap(), &block).unwrap();
            assert_eq!(got, want, "parents {parents_one:?}, omega {omega:?}");
        }
    }
}
