//! Every kernel of `kernels/*.cu` against its CPU twin on random inputs, outputs poisoned with
//! NaN before each run, through the real launch code of `backend::gpu` on every device present:
//! the CUDA emulator (feature `emulator`, default: always) and a GPU (feature `cuda`; without a
//! GPU or driver that half prints "skipped: <reason>"). Tolerances: relative L2 error 1e-4 for
//! f32 kernels, 1e-2 for bf16 GEMMs; the fused acceptance kernel must match its twin
//! (`backend::cpu::accept`) exactly.
#![cfg(any(feature = "emulator", feature = "cuda"))]

mod common;

use std::sync::Arc;

use common::devices::on_every_device;
use spire::backend::cpu::accept as accept_twin;
use spire::backend::gpu::{Driver, GemmShape, GpuBackend, GpuBuf};
use spire::backend::{accept_on_host, AttentionLayout, Backend, ChildDraws, CpuBackend, DraftBlock, ForwardPlan, Gather, KvDtype, KvShape, LogitsMap, Packed, RmsNorm, RowGather, NO_TOKEN};
use spire::kv::{PagedKvCache, QueryVisibility};
use spire::sampling::Rng;
use spire::weights::synthetic::{normal, write_safetensors, HostTensor};
use spire::weights::{DType, WeightFile};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| normal(&mut rng)).collect()
}

fn poisoned<D: Driver>(gpu: &GpuBackend<D>, len: usize) -> GpuBuf<D> {
    gpu.upload(&vec![f32::NAN; len]).unwrap()
}

/// `packed` uploaded as words on `be`.
fn words_on<B: Backend>(be: &B, packed: &Packed) -> B::Words {
    let mut words = be.words(0).unwrap();
    be.upload_words_into(&mut words, packed.words()).unwrap();
    words
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
fn rms_norm_rows() {
    on_every_device!(rms_norm_rows_on);
}

fn rms_norm_rows_on<D: Driver>(gpu: &GpuBackend<D>) {
    for &(rows, dim) in &[(7usize, 1280usize), (3, 100)] {
        let (x, w) = (random(rows * dim, 1), random(dim, 2));
        let mut want = vec![0.0; rows * dim];
        CpuBackend.rms_norm(&x, &CpuBackend.weight_from_host(&w).unwrap(), 1e-5, dim, &mut want).unwrap();
        let mut out = poisoned(gpu, rows * dim);
        gpu.rms_norm(&gpu.upload(&x).unwrap(), &gpu.weight_from_host(&w).unwrap(), 1e-5, dim, &mut out).unwrap();
        assert_close("rms_norm", &gpu.download(&out).unwrap(), &want, 1e-4);
    }
}

#[test]
fn rope_rotates_q_and_k_heads() {
    on_every_device!(rope_rotates_q_and_k_heads_on);
}

fn rope_rotates_q_and_k_heads_on<D: Driver>(gpu: &GpuBackend<D>) {
    let (rows, n_head, head_dim, max_pos) = (5, 4, 64, 17);
    let stride = 3 * n_head * head_dim;
    let (x, table) = (random(rows * stride, 4), random(max_pos * head_dim, 5));
    let positions = [0u32, 3, 16, 7, 7];
    let mut want = x.clone();
    CpuBackend.rope(&mut want, rows, stride, 2 * n_head, head_dim, &table, &ForwardPlan::positions(&positions)).unwrap();
    let mut got = gpu.upload(&x).unwrap();
    let plan = gpu.upload_plan(ForwardPlan::positions(&positions)).unwrap();
    gpu.rope(&mut got, rows, stride, 2 * n_head, head_dim, &gpu.upload(&table).unwrap(), &plan).unwrap();
    assert_close("rope", &gpu.download(&got).unwrap(), &want, 1e-5);
}

#[test]
fn swiglu_add_and_concat() {
    on_every_device!(swiglu_add_and_concat_on);
}

fn swiglu_add_and_concat_on<D: Driver>(gpu: &GpuBackend<D>) {
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
    on_every_device!(embedding_gather_f32_and_bf16_on);
}

fn embedding_gather_f32_and_bf16_on<D: Driver>(gpu: &GpuBackend<D>) {
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
        CpuBackend.embedding(&cpu_w, &ForwardPlan::gather(&ids, &out_rows), 0, None, dim, &mut want).unwrap();
        let mut out = poisoned(gpu, ids.len() * dim);
        let plan = gpu.upload_plan(ForwardPlan::gather(&ids, &out_rows)).unwrap();
        gpu.embedding(&gpu_w, &plan, 0, None, dim, &mut out).unwrap();
        assert_eq!(gpu.download(&out).unwrap(), want);

        // Indirect: ids index device tokens; NO_TOKEN, a token past the table and an index past
        // the tokens give zero rows.
        let tokens = [17u32, NO_TOKEN, 2, 50];
        let indirect = ForwardPlan { gathers: vec![Gather { ids: vec![0, 1, 2, 3, 9], rows: out_rows.to_vec(), indirect: true }], ..ForwardPlan::default() };
        CpuBackend.embedding(&cpu_w, &indirect, 0, Some(&tokens.to_vec()), dim, &mut want).unwrap();
        let zero = vec![0.0; dim];
        for (i, &row) in out_rows.iter().enumerate() {
            let got = &want[row as usize * dim..][..dim];
            assert_eq!(got == zero.as_slice(), i != 0 && i != 2, "indirect row {i}");
        }
        let mut out = poisoned(gpu, ids.len() * dim);
        let plan = gpu.upload_plan(indirect.clone()).unwrap();
        let mut dev_tokens = gpu.words(0).unwrap();
        gpu.upload_words_into(&mut dev_tokens, &tokens).unwrap();
        gpu.embedding(&gpu_w, &plan, 0, Some(&dev_tokens), dim, &mut out).unwrap();
        assert_eq!(gpu.download(&out).unwrap(), want);
        assert!(gpu.embedding(&gpu_w, &plan, 0, None, dim, &mut out).is_err(), "an indirect gather needs tokens");
    }
}

#[test]
fn gather_rows_with_an_index_past_the_source() {
    on_every_device!(gather_rows_with_an_index_past_the_source_on);
}

fn gather_rows_with_an_index_past_the_source_on<D: Driver>(gpu: &GpuBackend<D>) {
    let (rows, width) = (9, 130);
    let src = random(rows * width, 23);
    let mut packed = Packed::default();
    packed.push(&[5]);
    let gather = RowGather::pack(&mut packed, &[8, 0, 8, 9, 3]);
    let mut want = vec![f32::NAN; 5 * width];
    CpuBackend.gather_rows(&src, width, &packed.words().to_vec(), gather, &mut want).unwrap();
    assert_eq!(&want[..width], &src[8 * width..]);
    assert!(want[3 * width..4 * width].iter().all(|&v| v == 0.0));
    let mut out = poisoned(gpu, 5 * width);
    gpu.gather_rows(&gpu.upload(&src).unwrap(), width, &words_on(gpu, &packed), gather, &mut out).unwrap();
    assert_eq!(gpu.download(&out).unwrap(), want);
}

/// The skinny bf16 GEMM (decode row counts, f32 activations read as they are): against the CPU
/// with the same bf16 weights to f32 rounding, for 1 to 16 rows, odd widths; 17 rows and a `k`
/// that is not a multiple of 8 take the cast + GEMM path.
#[test]
fn skinny_bf16_gemm_matches_the_cpu() {
    on_every_device!(skinny_bf16_gemm_matches_the_cpu_on);
}

fn skinny_bf16_gemm_matches_the_cpu_on<D: Driver>(gpu: &GpuBackend<D>) {
    for &(rows, k, n, tol) in &[(1usize, 256usize, 37usize, 1e-5), (2, 1280, 130, 1e-5), (16, 64, 301, 1e-5), (7, 512, 9, 1e-5), (17, 256, 40, 1e-2), (3, 100, 20, 1e-2)] {
        let (x, w) = (random(rows * k, 70 + rows as u64), random(n * k, 71));
        let file = bf16_file(&w, &[n, k], "skinny");
        let mut want = vec![0.0; rows * n];
        CpuBackend.linear(&x, &CpuBackend.load_weight(&file, "w", &[n, k]).unwrap(), rows, k, n, &mut want).unwrap();
        let mut out = poisoned(gpu, rows * n);
        gpu.linear(&gpu.upload(&x).unwrap(), &gpu.load_weight(&file, "w", &[n, k]).unwrap(), rows, k, n, &mut out).unwrap();
        assert_close(&format!("bf16 linear {rows}x{k}x{n}"), &gpu.download(&out).unwrap(), &want, tol);
    }
}

/// The fused decode GEMMs (`norm_linear_swiglu`, `linear_add`: kernels/gemv.cu) against the
/// CPU's unfused ops (`rms_norm`, two `linear`s and `swiglu`; `linear` and `add_assign`) with the
/// same weights, to f32 rounding at skinny shapes; bf16 weights past 16 rows and f32 weights take
/// the unfused path.
#[test]
fn fused_gemm_epilogues_match_the_cpu() {
    on_every_device!(fused_gemm_epilogues_match_the_cpu_on);
}

fn fused_gemm_epilogues_match_the_cpu_on<D: Driver>(gpu: &GpuBackend<D>) {
    fused_gemm_case(gpu, false);
}

/// The fused epilogues are one launch at skinny shapes (on a backend of the test's own: the
/// shared ones count every test's launches).
#[cfg(feature = "emulator")]
#[test]
fn fused_gemm_epilogues_are_one_launch() {
    fused_gemm_case(&spire::backend::EmuBackend::new().unwrap(), true);
}

fn fused_gemm_case<D: Driver>(gpu: &GpuBackend<D>, count_launches: bool) {
    for &(rows, k, n, bf16, tol) in &[(1usize, 256usize, 37usize, true, 1e-5), (10, 512, 130, true, 1e-5), (17, 64, 40, true, 1e-2), (2, 64, 24, false, 1e-4)] {
        let (x, w1, w3, acc, g) = (random(rows * k, 80), random(n * k, 81), random(n * k, 82), random(rows * n, 83), random(k, 86));
        let (cpu_g, gpu_g) = (CpuBackend.weight_from_host(&g).unwrap(), gpu.weight_from_host(&g).unwrap());
        let shape = GemmShape { rows, k, n };
        let files: Vec<_> = [&w1, &w3].iter().enumerate().map(|(i, w)| bf16_file(w, &[n, k], &format!("fused-{i}"))).collect();
        let cpu_weight = |i: usize, w: &[f32]| if bf16 { CpuBackend.load_weight(&files[i], "w", &[n, k]).unwrap() } else { CpuBackend.weight_from_host(w).unwrap() };
        let gpu_weight = |i: usize, w: &[f32]| if bf16 { gpu.load_weight(&files[i], "w", &[n, k]).unwrap() } else { gpu.weight_from_host(w).unwrap() };
        let (c1, c3, g1, g3) = (cpu_weight(0, &w1), cpu_weight(1, &w3), gpu_weight(0, &w1), gpu_weight(1, &w3));
        let what = format!("{rows}x{k}x{n} {}", if bf16 { "bf16" } else { "f32" });

        let mut want = vec![0.0; rows * n];
        let cpu_norm = RmsNorm { weight: &cpu_g, eps: 1e-5 };
        CpuBackend.norm_linear_swiglu(&x, cpu_norm, [&c1, &c3], shape, &mut vec![0.0; rows * k], [&mut vec![0.0; rows * n], &mut vec![0.0; rows * n]], &mut want).unwrap();
        let (x_dev, mut out, mut gate_out, mut up_out) = (gpu.upload(&x).unwrap(), poisoned(gpu, rows * n), poisoned(gpu, rows * n), poisoned(gpu, rows * n));
        let mut normed = poisoned(gpu, rows * k);
        // Unfused, a bf16 GEMM past the skinny rows is a cast and a GEMM.
        let (fused, per_linear) = (bf16 && rows <= 16, if bf16 { 2 } else { 1 });
        let launches = |want: u64, op: &str| {
            if count_launches {
                assert_eq!(gpu.take_device_counts().unwrap().launches, want, "{op} {what}: launches");
            }
        };
        gpu.take_device_counts();
        gpu.norm_linear_swiglu(&x_dev, RmsNorm { weight: &gpu_g, eps: 1e-5 }, [&g1, &g3], shape, &mut normed, [&mut gate_out, &mut up_out], &mut out).unwrap();
        launches(if fused { 1 } else { 1 + 2 * per_linear + 1 }, "norm_linear_swiglu");
        assert_close(&format!("norm_linear_swiglu {what}"), &gpu.download(&out).unwrap(), &want, tol);

        let mut want = acc.clone();
        CpuBackend.linear_add(&x, &c1, shape, &mut vec![0.0; rows * n], &mut want).unwrap();
        let mut got = gpu.upload(&acc).unwrap();
        let mut projected = poisoned(gpu, rows * n);
        gpu.take_device_counts();
        gpu.linear_add(&x_dev, &g1, shape, &mut projected, &mut got).unwrap();
        launches(if fused { 1 } else { per_linear }, "linear_add"); // cuBLAS adds into acc itself
        assert_close(&format!("linear_add {what}"), &gpu.download(&got).unwrap(), &want, tol);
    }
}

/// The attention prologue against the CPU's composition (`rms_norm`, `linear`, `rope`,
/// `kv_write`), on f32 and bf16 pools: `rope_kv_write` (kernels/rope.cu) on given qkv rows, and
/// `norm_qkv_rope_kv_write` from the residual stream, fused into the skinny GEMM
/// (kernels/gemv.cu) at bf16 weights and 9 rows, unfused at 20 rows and with f32 weights; the
/// rotated qkv rows, and attention over the written keys and values (which reads every slot the
/// op wrote).
#[test]
fn fused_rope_and_kv_append_match_the_cpu() {
    on_every_device!(fused_rope_and_kv_append_match_the_cpu_on);
}

/// How a [`rope_kv_case`] makes its qkv rows.
#[derive(Clone, Copy, Debug)]
enum Prologue {
    /// Given qkv rows, then `rope_kv_write`.
    RopeKvWrite,
    /// `norm_qkv_rope_kv_write` from a residual stream, with bf16 (true) or f32 weights.
    Fused { rows: usize, bf16: bool },
}

fn rope_kv_case<B: Backend>(be: &B, dtype: KvDtype, prologue: Prologue, poison: impl Fn(usize) -> B::Buf) -> (Vec<f32>, Vec<f32>) {
    let (n_head, head_dim) = (4, 64);
    let rows = match prologue {
        Prologue::RopeKvWrite => 9,
        Prologue::Fused { rows, .. } => rows,
    };
    let width = n_head * head_dim;
    let shape = KvShape { n_layer: 2, num_blocks: 4, block_size: 16, n_head, head_dim, dtype };
    let mut cache: PagedKvCache<B> = PagedKvCache::new(be, shape).unwrap();
    let seq = cache.add_sequence();
    let slots = cache.extend(be, seq, rows).unwrap();
    let queries: Vec<_> = (0..rows).map(|r| QueryVisibility::causal(seq, r)).collect();
    let plan = ForwardPlan { positions: (0..rows as u32).map(|r| r + 1).collect(), slots, layout: cache.layout(&queries).unwrap(), ..ForwardPlan::default() };
    let plan = be.upload_plan(plan).unwrap();
    let table = be.upload(&random(41 * head_dim, 85)).unwrap();
    let mut qkv = be.upload(&random(rows * 3 * width, 84)).unwrap();
    match prologue {
        Prologue::RopeKvWrite => be.rope_kv_write(&mut qkv, rows, n_head, head_dim, &table, cache.pool_mut(), 1, &plan).unwrap(),
        Prologue::Fused { bf16, .. } => {
            let w = random(3 * width * width, 87);
            let wqkv = if bf16 { be.load_weight(&bf16_file(&w, &[3 * width, width], &format!("wqkv-{rows}")), "w", &[3 * width, width]).unwrap() } else { be.weight_from_host(&w).unwrap() };
            let g = be.weight_from_host(&random(width, 88)).unwrap();
            let x = be.upload(&random(rows * width, 89)).unwrap();
            let mut normed = poison(rows * width);
            let norm = RmsNorm { weight: &g, eps: 1e-5 };
            be.norm_qkv_rope_kv_write(&x, norm, &wqkv, (rows, n_head, head_dim), &table, (cache.pool_mut(), 1), &plan, &mut normed, &mut qkv).unwrap();
        }
    }
    let mut out = poison(rows * width);
    be.attention(&qkv, cache.pool(), 1, &plan, &mut out).unwrap();
    (be.download(&qkv).unwrap(), be.download(&out).unwrap())
}

fn fused_rope_and_kv_append_match_the_cpu_on<D: Driver>(gpu: &GpuBackend<D>) {
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        // Past the skinny rows a bf16 GEMM reads its input rounded to bf16 (2^-9 relative), which
        // the softmax amplifies.
        let cases = [
            (Prologue::RopeKvWrite, 1e-6, 1e-4),
            (Prologue::Fused { rows: 9, bf16: true }, 1e-5, 1e-4),
            (Prologue::Fused { rows: 20, bf16: true }, 1e-2, 1e-1),
            (Prologue::Fused { rows: 3, bf16: false }, 1e-5, 1e-4),
        ];
        for (prologue, qkv_tol, out_tol) in cases {
            let (want_qkv, want_out) = rope_kv_case(&CpuBackend, dtype, prologue, |len| vec![f32::NAN; len]);
            let (got_qkv, got_out) = rope_kv_case(gpu, dtype, prologue, |len| poisoned(gpu, len));
            assert_close(&format!("{prologue:?} qkv, {dtype:?} KV"), &got_qkv, &want_qkv, qkv_tol);
            assert_close(&format!("attention after {prologue:?}, {dtype:?} KV"), &got_out, &want_out, out_tol);
        }
    }
}

/// The attention prologue is one launch at skinny shapes with bf16 weights.
#[cfg(feature = "emulator")]
#[test]
fn fused_attention_prologue_is_one_launch() {
    let gpu = spire::backend::EmuBackend::new().unwrap();
    gpu.take_device_counts();
    rope_kv_case(&gpu, KvDtype::Bf16, Prologue::Fused { rows: 2, bf16: true }, |len| poisoned(&gpu, len));
    // Uploads aside: the prologue and attention.
    assert_eq!(gpu.take_device_counts().unwrap().launches, 2);
}

#[test]
fn linear_f32_and_bf16() {
    on_every_device!(linear_f32_and_bf16_on);
}

fn linear_f32_and_bf16_on<D: Driver>(gpu: &GpuBackend<D>) {
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

/// Three sequences in one pool of `dtype` elements: two decoding one token each (plain causal),
/// one verifying a 5-node draft tree; KV written with `kv_write`, one sequence forked (shared
/// blocks, copy-on-write through `kv_copy`) and a tree path compacted with `move_positions`.
fn attention_case<B: Backend>(be: &B, dtype: KvDtype, poison: impl Fn(usize) -> B::Buf) -> Vec<f32> {
    let (n_head, head_dim) = (4, 64);
    let width = n_head * head_dim;
    let shape = KvShape { n_layer: 2, num_blocks: 24, block_size: 16, n_head, head_dim, dtype };
    let mut cache: PagedKvCache<B> = PagedKvCache::new(be, shape).unwrap();
    let a = cache.add_sequence();
    let slots = cache.extend(be, a, 37).unwrap();
    be.kv_write(cache.pool_mut(), 1, &be.upload(&random(37 * 3 * width, 13)).unwrap(), &be.upload_plan(ForwardPlan::slots(&slots)).unwrap()).unwrap();
    let b = cache.fork(a).unwrap();
    let slots = cache.extend(be, b, 40).unwrap(); // un-shares the tail block: kv_copy
    be.kv_write(cache.pool_mut(), 1, &be.upload(&random(3 * 3 * width, 14)).unwrap(), &be.upload_plan(ForwardPlan::slots(&slots)).unwrap()).unwrap();
    let c = cache.add_sequence();
    let slots = cache.extend(be, c, 20 + 5).unwrap();
    be.kv_write(cache.pool_mut(), 1, &be.upload(&random(25 * 3 * width, 15)).unwrap(), &be.upload_plan(ForwardPlan::slots(&slots)).unwrap()).unwrap();
    cache.move_positions(be, c, &[22, 24], &[21, 22]).unwrap(); // dependent copies
    let parents = [None, Some(0), Some(0), Some(1), Some(3)];
    let mut queries = vec![QueryVisibility::causal(a, 36), QueryVisibility::causal(b, 39)];
    queries.extend(tree_windows(&parents).into_iter().map(|window| QueryVisibility { seq: c, prefix: 20, window_start: 20, window }));
    let layout: AttentionLayout = cache.layout(&queries).unwrap();
    let mut out = poison(queries.len() * width);
    let qkv = be.upload(&random(queries.len() * 3 * width, 16)).unwrap();
    be.attention(&qkv, cache.pool(), 1, &be.upload_plan(ForwardPlan::layout(layout)).unwrap(), &mut out).unwrap();
    be.download(&out).unwrap()
}

#[test]
fn paged_attention_decode_and_tree_verification() {
    on_every_device!(paged_attention_decode_and_tree_verification_on);
}

fn paged_attention_decode_and_tree_verification_on<D: Driver>(gpu: &GpuBackend<D>) {
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        let want = attention_case(&CpuBackend, dtype, |len| vec![f32::NAN; len]);
        let got = attention_case(gpu, dtype, |len| poisoned(gpu, len));
        assert_close(&format!("attention over {dtype:?} KV"), &got, &want, 1e-4);
    }
    // bf16 keys and values move the output by about their rounding (2^-9 relative).
    let (f32_kv, bf16_kv) = (attention_case(&CpuBackend, KvDtype::F32, |len| vec![0.0; len]), attention_case(&CpuBackend, KvDtype::Bf16, |len| vec![0.0; len]));
    assert_close("bf16 against f32 KV", &bf16_kv, &f32_kv, 1e-2);
}

/// Long contexts at few (row, head) pairs, where the kernel splits each pair's keys over blocks
/// and the last block merges them: two decoding sequences (300 and 130 keys) and a 3-node tree
/// over a 250-key prefix, on f32 and bf16 pools, twice in a row (the arrival counts must be back
/// at zero after a launch).
#[test]
fn paged_attention_splits_long_contexts() {
    on_every_device!(paged_attention_splits_long_contexts_on);
}

fn long_attention_case<B: Backend>(be: &B, dtype: KvDtype, poison: impl Fn(usize) -> B::Buf) -> Vec<f32> {
    let (n_head, head_dim) = (4, 64);
    let width = n_head * head_dim;
    let shape = KvShape { n_layer: 1, num_blocks: 48, block_size: 16, n_head, head_dim, dtype };
    let mut cache: PagedKvCache<B> = PagedKvCache::new(be, shape).unwrap();
    let mut queries = Vec::new();
    for (keys, seed) in [(300, 30), (130, 31)] {
        let seq = cache.add_sequence();
        let slots = cache.extend(be, seq, keys).unwrap();
        be.kv_write(cache.pool_mut(), 0, &be.upload(&random(keys * 3 * width, seed)).unwrap(), &be.upload_plan(ForwardPlan::slots(&slots)).unwrap()).unwrap();
        queries.push(QueryVisibility::causal(seq, keys - 1));
    }
    let tree = cache.add_sequence();
    let slots = cache.extend(be, tree, 253).unwrap();
    be.kv_write(cache.pool_mut(), 0, &be.upload(&random(253 * 3 * width, 32)).unwrap(), &be.upload_plan(ForwardPlan::slots(&slots)).unwrap()).unwrap();
    for window in [vec![true, false, false], vec![true, true, false], vec![true, false, true]] {
        queries.push(QueryVisibility { seq: tree, prefix: 250, window_start: 250, window });
    }
    attention_twice(be, &cache, cache.layout(&queries).unwrap(), 33, poison)
}

fn paged_attention_splits_long_contexts_on<D: Driver>(gpu: &GpuBackend<D>) {
    assert!(spire::backend::gpu::attention_splits(5 * 4, 300) > 1, "the case must split");
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        let want = long_attention_case(&CpuBackend, dtype, |len| vec![f32::NAN; len]);
        let got = long_attention_case(gpu, dtype, |len| poisoned(gpu, len));
        assert_close(&format!("split attention over {dtype:?} KV"), &got, &want, 1e-4);
    }
}

/// Draft trees larger than one attention block's group of rows (kernels/attention.cu serves up
/// to ATTN_GROUP_ROWS rows with the same keys per block): a 20-node tree over a 200-key prefix in
/// two sequences (a CFG pair: the same layout, adjacent, so only the sequence tells the groups
/// apart), a decoding row between them and a 3-node tree with a one-key prefix, on f32 and bf16
/// pools, twice in a row (split-KV's arrival counts back at zero). 6 groups over 46 rows.
#[test]
fn paged_attention_serves_large_trees_in_groups() {
    on_every_device!(paged_attention_serves_large_trees_in_groups_on);
}

/// Attention of layer 0 over `layout`'s rows (random queries from `seed`), launched twice in a row
/// (split-KV's arrival counts must be back at zero after a launch): both outputs, one after the
/// other.
fn attention_twice<B: Backend>(be: &B, cache: &PagedKvCache<B>, layout: AttentionLayout, seed: u64, poison: impl Fn(usize) -> B::Buf) -> Vec<f32> {
    let (rows, width) = (layout.rows(), layout.n_head * layout.head_dim);
    let plan = be.upload_plan(ForwardPlan::layout(layout)).unwrap();
    let qkv = be.upload(&random(rows * 3 * width, seed)).unwrap();
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let mut out = poison(rows * width);
        be.attention(&qkv, cache.pool(), 0, &plan, &mut out).unwrap();
        outputs.extend(be.download(&out).unwrap());
    }
    outputs
}

/// Each node's visibility window in a draft tree of `parents`: itself and its ancestors.
fn tree_windows(parents: &[Option<usize>]) -> Vec<Vec<bool>> {
    (0..parents.len())
        .map(|node| {
            let mut window = vec![false; parents.len()];
            let mut cur = Some(node);
            while let Some(n) = cur {
                window[n] = true;
                cur = parents[n];
            }
            window
        })
        .collect()
}

fn large_tree_attention<B: Backend>(be: &B, dtype: KvDtype, poison: impl Fn(usize) -> B::Buf) -> (Vec<f32>, AttentionLayout) {
    let (n_head, head_dim) = (2, 64);
    let width = n_head * head_dim;
    let shape = KvShape { n_layer: 1, num_blocks: 40, block_size: 16, n_head, head_dim, dtype };
    let mut cache: PagedKvCache<B> = PagedKvCache::new(be, shape).unwrap();
    let fill = |cache: &mut PagedKvCache<B>, keys: usize, seed: u64| {
        let seq = cache.add_sequence();
        let slots = cache.extend(be, seq, keys).unwrap();
        be.kv_write(cache.pool_mut(), 0, &be.upload(&random(keys * 3 * width, seed)).unwrap(), &be.upload_plan(ForwardPlan::slots(&slots)).unwrap()).unwrap();
        seq
    };
    let (cond, uncond, decode, small) = (fill(&mut cache, 220, 40), fill(&mut cache, 220, 41), fill(&mut cache, 90, 42), fill(&mut cache, 20, 43));
    let mut rng = Rng::new(44);
    let parents: Vec<Option<usize>> = (0..20).map(|n| (n > 0).then(|| rng.below(n + 1)).and_then(|p| p.checked_sub(1))).collect();
    let mut queries = Vec::new();
    for (seq, extra) in [(cond, None), (uncond, Some(QueryVisibility::causal(decode, 89)))] {
        queries.extend(tree_windows(&parents).into_iter().map(|window| QueryVisibility { seq, prefix: 200, window_start: 200, window }));
        queries.extend(extra);
    }
    let mut small_windows = tree_windows(&[None, Some(0), Some(0)]);
    small_windows.iter_mut().for_each(|w| w.resize(20, false));
    queries.extend(small_windows.into_iter().map(|window| QueryVisibility { seq: small, prefix: 1, window_start: 1, window }));
    let layout: AttentionLayout = cache.layout(&queries).unwrap();
    (attention_twice(be, &cache, layout.clone(), 45, poison), layout)
}

fn paged_attention_serves_large_trees_in_groups_on<D: Driver>(gpu: &GpuBackend<D>) {
    for dtype in [KvDtype::F32, KvDtype::Bf16] {
        let (want, layout) = large_tree_attention(&CpuBackend, dtype, |len| vec![f32::NAN; len]);
        assert_eq!(spire::backend::gpu::attention_groups(&layout), 6, "16 + 4 rows per tree, the decoding row, the small tree");
        assert!(spire::backend::gpu::attention_splits(6 * 2, 220) > 1, "the case must split");
        let (got, _) = large_tree_attention(gpu, dtype, |len| poisoned(gpu, len));
        assert_close(&format!("grouped tree attention over {dtype:?} KV"), &got, &want, 1e-4);
    }
}

/// Where a non-finite value enters attention (regression: the kernel once dropped a warp whose
/// running sum had become NaN and returned a finite softmax over the other keys).
#[derive(Clone, Copy, Debug)]
enum NonFinite {
    /// Element 5 of head 1 of the key at position 7 is NaN.
    NanKey,
    /// Element 0 of head 2 of the query is +inf.
    InfQuery,
}

/// One query over a 40-key context (every warp of the kernel sees keys) with one non-finite input.
fn nonfinite_attention<B: Backend>(be: &B, case: NonFinite, keys: usize, poison: impl Fn(usize) -> B::Buf) -> Vec<f32> {
    let (n_head, head_dim) = (4, 64);
    let width = n_head * head_dim;
    let shape = KvShape { n_layer: 1, num_blocks: keys.div_ceil(16), block_size: 16, n_head, head_dim, dtype: KvDtype::F32 };
    let mut cache: PagedKvCache<B> = PagedKvCache::new(be, shape).unwrap();
    let seq = cache.add_sequence();
    let slots = cache.extend(be, seq, keys).unwrap();
    let mut kv_rows = random(keys * 3 * width, 21);
    let mut q = random(3 * width, 22);
    match case {
        NonFinite::NanKey => kv_rows[7 * 3 * width + width + head_dim + 5] = f32::NAN,
        NonFinite::InfQuery => q[2 * head_dim] = f32::INFINITY,
    }
    be.kv_write(cache.pool_mut(), 0, &be.upload(&kv_rows).unwrap(), &be.upload_plan(ForwardPlan::slots(&slots)).unwrap()).unwrap();
    let layout = cache.layout(&[QueryVisibility::causal(seq, keys - 1)]).unwrap();
    let mut out = poison(width);
    be.attention(&be.upload(&q).unwrap(), cache.pool(), 0, &be.upload_plan(ForwardPlan::layout(layout)).unwrap(), &mut out).unwrap();
    be.download(&out).unwrap()
}

#[test]
fn paged_attention_propagates_nan_and_inf_like_the_cpu() {
    on_every_device!(paged_attention_propagates_nan_and_inf_like_the_cpu_on);
}

fn paged_attention_propagates_nan_and_inf_like_the_cpu_on<D: Driver>(gpu: &GpuBackend<D>) {
    // 40 keys: one block per head; 300: split over the keys, the NaN in one split.
    for (case, keys) in [NonFinite::NanKey, NonFinite::InfQuery].into_iter().flat_map(|case| [(case, 40), (case, 300)]) {
        let want = nonfinite_attention(&CpuBackend, case, keys, |len| vec![0.0; len]);
        let got = nonfinite_attention(gpu, case, keys, |len| poisoned(gpu, len));
        assert!(want.iter().any(|v| v.is_nan()), "{case:?}: the CPU reference gives NaN");
        let nan_pattern = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
        assert_eq!(nan_pattern(&got), nan_pattern(&want), "{case:?}, {keys} keys: NaN outputs differ from the CPU's");
        let finite = |v: &[f32]| v.iter().map(|x| if x.is_nan() { 0.0 } else { *x }).collect::<Vec<_>>();
        assert_close(&format!("{case:?}, {keys} keys: finite heads"), &finite(&got), &finite(&want), 1e-4);
    }
}

#[test]
fn concat_rows_with_an_empty_side() {
    on_every_device!(concat_rows_with_an_empty_side_on);
}

fn concat_rows_with_an_empty_side_on<D: Driver>(gpu: &GpuBackend<D>) {
    let rows = 3;
    for (a_dim, b_dim) in [(0, 5), (5, 0), (0, 0)] {
        let (a, b) = (random(rows * a_dim, 23), random(rows * b_dim, 24));
        let mut want = vec![0.0; rows * (a_dim + b_dim)];
        CpuBackend.concat_rows(&a, a_dim, &b, b_dim, &mut want).unwrap();
        let mut out = poisoned(gpu, rows * (a_dim + b_dim));
        gpu.concat_rows(&gpu.upload(&a).unwrap(), a_dim, &gpu.upload(&b).unwrap(), b_dim, &mut out).unwrap();
        assert_eq!(gpu.download(&out).unwrap(), want, "a_dim {a_dim}, b_dim {b_dim}");
    }
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
    on_every_device!(fused_acceptance_matches_its_cpu_twin_exactly_on);
}

fn fused_acceptance_matches_its_cpu_twin_exactly_on<D: Driver>(gpu: &GpuBackend<D>) {
    let (batch, vocab) = (5, 16384);
    let mut rng = Rng::new(17);
    // A chain of 4, a tree (two children of the root, two of node 0, one of node 2), and that
    // tree with its last level absent (a sequence drafting fewer levels than the block).
    for parents_one in [vec![-1, 0, 1, 2], vec![-1, -1, 0, 0, 2], vec![-1, -1, 0, 0, -2]] {
        let nodes = parents_one.len();
        let p = distributions(batch * (nodes + 1), vocab, 0.5, 18);
        let q = distributions(batch * (nodes + 1), vocab, 0.7, 19);
        let tokens: Vec<u32> = (0..batch * nodes).map(|_| rng.below(64) as u32).collect();
        let parents = parents_one.repeat(batch);
        let u_accept: Vec<f32> = (0..batch * nodes).map(|_| rng.uniform() as f32).collect();
        let u_sample: Vec<f32> = (0..batch).map(|_| rng.uniform() as f32).collect();
        for omega in [vec![1.0; nodes], vec![3.0, 2.0, 1.5, 1.0, 1.0][..nodes].to_vec(), vec![1e4; nodes]] {
            let block = DraftBlock { batch, nodes, vocab, tokens: &tokens, parents: &parents, omega: &omega, u_accept: &u_accept, u_sample: &u_sample };
            let want = accept_twin::accept_block(&p, &q, &block).unwrap();
            assert_eq!(accept_on_host(&CpuBackend, &p, &q, &block).unwrap(), want, "the CPU backend's op is the twin");
            let got = accept_on_host(gpu, &p, &q, &block).unwrap();
            assert_eq!(got, want, "parents {parents_one:?}, omega {omega:?}");
        }
    }
}

/// The lossless law through the device's acceptance kernel: one tree level of three siblings
/// drawn from q without replacement, verified against p; the emitted token (the accepted
/// sibling, or the residual draw) must follow p (chi-square at level 1e-4; 40,000 sequences in
/// four launches give power against a 1% TV error).
#[test]
fn fused_acceptance_emits_the_target_law() {
    on_every_device!(fused_acceptance_emits_the_target_law_on);
}

fn fused_acceptance_emits_the_target_law_on<D: Driver>(gpu: &GpuBackend<D>) {
    use spire::acceptance::sample_children;
    let p = [0.05f32, 0.4, 0.1, 0.25, 0.15, 0.05];
    let q = [0.3f32, 0.05, 0.3, 0.1, 0.05, 0.2];
    let (width, vocab, batch, launches) = (3, p.len(), 10_000, 4);
    let mut rng = Rng::new(29);
    let mut counts = vec![0u64; vocab];
    let dist_p: Vec<f32> = (0..batch * (width + 1)).flat_map(|_| p).collect();
    let dist_q: Vec<f32> = (0..batch * (width + 1)).flat_map(|_| q).collect();
    let parents = vec![-1; batch * width];
    for _ in 0..launches {
        let tokens: Vec<u32> = (0..batch).flat_map(|_| sample_children(&q, width, &mut rng)).collect();
        let u_accept: Vec<f32> = (0..batch * width).map(|_| rng.uniform() as f32).collect();
        let u_sample: Vec<f32> = (0..batch).map(|_| rng.uniform() as f32).collect();
        let block = DraftBlock { batch, nodes: width, vocab, tokens: &tokens, parents: &parents, omega: &[1.0; 3], u_accept: &u_accept, u_sample: &u_sample };
        let out = accept_on_host(gpu, &dist_p, &dist_q, &block).unwrap();
        for b in 0..batch {
            let emitted = out.paths[b].first().map_or(out.next[b], |&n| tokens[b * width + n]);
            counts[emitted as usize] += 1;
        }
    }
    let probs: Vec<f64> = p.iter().map(|&v| f64::from(v)).collect();
    assert!(common::stats::passes_chi_square("accept_block tree level", &counts, &probs), "the acceptance kernel does not emit the target law");
}

/// Logits for the logits-processing tests, `[7, vocab]`: rows 0, 1, 3 and 4 random (spread 3),
/// rows 2 and 5 on a grid of 0.5 (many ties, also after the CFG mix of the two), row 6
/// constant (all tied).
fn sampling_logits(vocab: usize, seed: u64) -> Vec<f32> {
    let noise = random(7 * vocab, seed);
    noise
        .chunks(vocab)
        .enumerate()
        .flat_map(|(r, row)| {
            row.iter().map(move |&v| match r {
                2 | 5 => (v * 2.0).round() / 2.0,
                6 => 0.5,
                _ => 3.0 * v,
            })
        })
        .collect()
}

/// `got` (device) against the host's `want` for one row: the same support (ties at the top-p
/// cut resolve to the earliest indices on both sides), every probability within 1e-6.
fn assert_matches_host(what: &str, got: &[f32], want: &[f32]) {
    let differ: Vec<usize> = (0..got.len()).filter(|&i| (got[i] > 0.0) != (want[i] > 0.0)).collect();
    assert!(differ.is_empty(), "{what}: supports differ at {differ:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6, "{what}: token {i}: {g} vs host {w}");
    }
}

/// `process_logits` on `be` for host row lists (`uncond` with CFG): the probabilities
/// `[rows_out, vocab]` (NaN where no row was written) and the flags.
#[allow(clippy::too_many_arguments)]
fn process_on<B: Backend>(be: &B, logits: &[f32], vocab: usize, cond: &[u32], uncond: Option<&[u32]>, dst: &[u32], rows_out: usize, params: &spire::sampling::SamplingParams) -> spire::Result<(Vec<f32>, Vec<u32>)> {
    let mut packed = Packed::default();
    let map = LogitsMap::pack(&mut packed, vocab, cond, uncond, dst, 0)?;
    let (mut probs, mut flags) = (be.upload(&vec![f32::NAN; rows_out * vocab])?, be.words(rows_out)?);
    be.process_logits(&be.upload(logits)?, &words_on(be, &packed), map, params, &mut probs, &mut flags)?;
    Ok((be.download(&probs)?, be.download_words(&flags)?))
}

/// kernels/sampling.cu against its CPU twin (bit for bit, flags included) and against
/// `SamplingParams::distribution` (max abs 1e-6, same supports), over CFG on/off, temperature
/// 0 / 0.7 / 1, top-k 0 / 1 / 50, top-p 1 / 0.9, random and tied logits, vocab 1000 and 16384,
/// with row maps that read the logits and write the output rows out of order.
#[test]
fn logits_processing_matches_its_twin_exactly_and_the_host_within_1e_6() {
    on_every_device!(logits_processing_matches_its_twin_exactly_and_the_host_within_1e_6_on);
}

fn logits_processing_matches_its_twin_exactly_and_the_host_within_1e_6_on<D: Driver>(gpu: &GpuBackend<D>) {
    use spire::sampling::SamplingParams;
    let (cond, uncond, dst) = ([4u32, 2, 6], [1u32, 5, 0], [2u32, 0, 1]);
    for vocab in [1000usize, 16384] {
        let logits = sampling_logits(vocab, 31 + vocab as u64);
        let mut cases = Vec::new();
        for cfg_scale in [1.0f32, 4.0] {
            cases.push(SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, cfg_scale });
            for temperature in [0.7f32, 1.0] {
                for top_k in [0usize, 1, 50] {
                    for top_p in [1.0f32, 0.9] {
                        cases.push(SamplingParams { temperature, top_k, top_p, cfg_scale });
                    }
                }
            }
        }
        for params in cases {
            let what = format!("vocab {vocab}, {params:?}");
            let (want, want_flags) = process_on(&CpuBackend, &logits, vocab, &cond, Some(&uncond), &dst, 3, &params).unwrap();
            let (got, flags) = process_on(gpu, &logits, vocab, &cond, Some(&uncond), &dst, 3, &params).unwrap();
            assert_eq!(flags, want_flags, "{what}: flags");
            assert_eq!(want_flags, vec![0; cond.len()], "{what}: no row is non-finite");
            let differ = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(differ.is_none(), "{what}: kernel and twin differ at {differ:?}");
            for (r, (&c, &u)) in cond.iter().zip(&uncond).enumerate() {
                let row = |i: u32| &logits[i as usize * vocab..][..vocab];
                let host = params.distribution(row(c), Some(row(u)), "test").unwrap();
                let got_row = &got[dst[r] as usize * vocab..][..vocab];
                assert_matches_host(&format!("{what}, row {r}"), got_row, &host);
                let sum: f64 = got_row.iter().map(|&p| f64::from(p)).sum();
                assert!((sum - 1.0).abs() < 1e-5, "{what}, row {r}: sums to {sum}");
            }
        }
    }
}

/// A NaN or an infinity in the logits flags exactly the output rows that read it (the
/// unconditional row only with CFG), fills them with NaN, and leaves the other rows as the twin
/// computes them; a row map naming a logits row beyond the logits is flagged 2, a destination
/// beyond the output is skipped, and a map outside its words is an error before the launch.
#[test]
fn logits_processing_flags_nonfinite_rows_only() {
    on_every_device!(logits_processing_flags_nonfinite_rows_only_on);
}

fn logits_processing_flags_nonfinite_rows_only_on<D: Driver>(gpu: &GpuBackend<D>) {
    use spire::backend::ops::{ROW_BAD_INDEX, ROW_NONFINITE};
    use spire::sampling::SamplingParams;
    let vocab = 1000;
    let mut logits = random(6 * vocab, 41);
    logits[vocab + 17] = f32::NAN; // row 1: the conditional row of output 1
    logits[4 * vocab + 999] = f32::INFINITY; // row 4: the unconditional row of output 2
    let (cond, uncond, dst) = ([0u32, 1, 2], [3u32, 5, 4], [0u32, 1, 2]);
    for (cfg_scale, expected) in [(1.0f32, [0, ROW_NONFINITE, 0]), (2.0, [0, ROW_NONFINITE, ROW_NONFINITE])] {
        let params = SamplingParams { temperature: 0.8, top_k: 50, top_p: 0.9, cfg_scale };
        let (want, want_flags) = process_on(&CpuBackend, &logits, vocab, &cond, Some(&uncond), &dst, 3, &params).unwrap();
        assert_eq!(want_flags, expected, "cfg {cfg_scale}: twin flags");
        let (got, flags) = process_on(gpu, &logits, vocab, &cond, Some(&uncond), &dst, 3, &params).unwrap();
        assert_eq!(flags, expected, "cfg {cfg_scale}: kernel flags");
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "cfg {cfg_scale}: kernel and twin differ");
        for (r, &flag) in expected.iter().enumerate() {
            let row = &got[r * vocab..][..vocab];
            assert_eq!(row.iter().all(|p| p.is_nan()), flag != 0, "cfg {cfg_scale}, row {r}: NaN fill");
            let host = params.distribution(&logits[cond[r] as usize * vocab..][..vocab], Some(&logits[uncond[r] as usize * vocab..][..vocab]), "t");
            assert_eq!(host.is_err(), flag != 0, "cfg {cfg_scale}, row {r}: the host's verdict");
        }
    }
    // Indices are checked by the kernel: a logits row beyond the logits, a destination beyond
    // the output (row 2 stays unwritten).
    let params = SamplingParams::default();
    for be_result in [process_on(&CpuBackend, &logits, vocab, &[0, 99, 2], None, &[0, 1, 7], 3, &params), process_on(gpu, &logits, vocab, &[0, 99, 2], None, &[0, 1, 7], 3, &params)] {
        let (probs, flags) = be_result.unwrap();
        assert_eq!(flags, vec![0, ROW_BAD_INDEX, 0]);
        assert!(probs[2 * vocab..].iter().all(|p| p.is_nan()));
    }
    // A map whose words lie outside the uploaded buffer is an error before the launch.
    let map = LogitsMap { rows: 2, vocab, cfg: false, map_at: 0, dst_at: 5, flags_at: 0 };
    let mut flags = gpu.words(2).unwrap();
    let words = words_on(gpu, &Packed::default());
    assert!(gpu.process_logits(&gpu.upload(&logits).unwrap(), &words, map, &params, &mut poisoned(gpu, 2 * vocab), &mut flags).is_err());
}

/// kernels/accept.cu `sample_children` against its CPU twin, token for token: widths 1 to 5
/// over random distributions, distributions with small supports (children run out: NO_TOKEN),
/// a NaN row and a row index past the distributions, vocab 1000 and 16384.
#[test]
fn child_draws_match_their_twin_exactly() {
    on_every_device!(child_draws_match_their_twin_exactly_on);
}

fn child_draws_match_their_twin_exactly_on<D: Driver>(gpu: &GpuBackend<D>) {
    let mut rng = Rng::new(47);
    for vocab in [1000usize, 16384] {
        let rows = 6;
        let mut probs = distributions(rows, vocab, 0.8, 48);
        // Row 3: support of 3 tokens; row 4: NaN.
        probs[3 * vocab..4 * vocab].iter_mut().enumerate().for_each(|(i, p)| *p = if [5, 700, 999].contains(&i) { 1.0 / 3.0 } else { 0.0 });
        probs[4 * vocab + 11] = f32::NAN;
        for width in 1..=5usize {
            let parent_rows = [0u32, 3, 1, 4, 9, 5];
            let first: Vec<u32> = (0..parent_rows.len() as u32).map(|i| i * width as u32).collect();
            let uniforms: Vec<f32> = (0..parent_rows.len() * width).map(|_| rng.uniform() as f32).collect();
            let mut packed = Packed::default();
            let draws = ChildDraws::pack(&mut packed, vocab, width, &parent_rows, &first, &uniforms).unwrap();
            let mut want = vec![7u32; parent_rows.len() * width];
            CpuBackend.sample_children(&probs, &packed.words().to_vec(), draws, &mut want).unwrap();
            let mut tokens = gpu.words(want.len()).unwrap();
            gpu.sample_children(&gpu.upload(&probs).unwrap(), &words_on(gpu, &packed), draws, &mut tokens).unwrap();
            assert_eq!(gpu.download_words(&tokens).unwrap(), want, "vocab {vocab}, width {width}");
            // Row 3 has three tokens; row 9 does not exist.
            assert_eq!(want[width..2 * width].iter().filter(|&&t| t == NO_TOKEN).count(), width.saturating_sub(3));
            assert!(want[4 * width..5 * width].iter().all(|&t| t == NO_TOKEN));
        }
    }
}

/// `sample_children` on `be`: `width` children of each parent row `rows[i]` of `probs`.
fn child_draws<B: Backend>(be: &B, probs: &[f32], vocab: usize, width: usize, rows: &[u32], uniforms: &[f32]) -> Vec<u32> {
    let first: Vec<u32> = (0..rows.len() as u32).map(|i| i * width as u32).collect();
    let mut packed = Packed::default();
    let draws = ChildDraws::pack(&mut packed, vocab, width, rows, &first, uniforms).unwrap();
    let mut tokens = be.words(rows.len() * width).unwrap();
    be.sample_children(&be.upload(probs).unwrap(), &words_on(be, &packed), draws, &mut tokens).unwrap();
    be.download_words(&tokens).unwrap()
}

/// Uniforms at the edges of the inverse CDF: 0, the largest f32 below 1, and 1 itself (an f64
/// uniform below 1 can round to it), among ordinary ones.
const EDGE_UNIFORMS: [f32; 6] = [0.0, 0.3, 0.6, 0.999, 1.0 - f32::EPSILON / 2.0, 1.0];

/// Rows of `vocab` whose draws reach every branch of the kernel's inverse CDF: a random
/// distribution; a sparse one over several warps, lanes and groups; one whose lane sums and
/// warp scan round apart (`1 + 7 * 2^-23`, `3 * 2^-25`, `6 * 2^-25` on lanes 0..2: the scan's
/// lane 2 ends one ulp below the warp total, so at u = 1 - 2^-24 no lane crosses the target and
/// the draw falls back to the last lane with mass); a row all on the last element; and NaN.
fn cdf_rows(vocab: usize, seed: u64) -> Vec<f32> {
    let mut rows = distributions(5, vocab, 0.8, seed);
    let row = |r: usize| r * vocab..(r + 1) * vocab;
    rows[row(1)].fill(0.0);
    for (i, &y) in [3usize, 1029, 8191, 4100, 16383, 12288, 777, 2, 1023, 4098].iter().enumerate() {
        if y < vocab {
            rows[vocab + y] = 0.05 + 0.01 * i as f32;
        }
    }
    rows[row(2)].fill(0.0);
    rows[2 * vocab..][..9].copy_from_slice(&[1.0 + 7.0 * f32::EPSILON, 0.0, 0.0, 0.0, 3.0 * f32::EPSILON / 4.0, 0.0, 0.0, 0.0, 6.0 * f32::EPSILON / 4.0]);
    rows[row(3)].fill(0.0);
    rows[4 * vocab - 1] = 1.0;
    rows[4 * vocab + 7] = f32::NAN;
    rows
}

/// Both acceptance kernels against their twins at `vocab`: `accept_block` over a tree and a chain
/// (tokens anywhere in the vocabulary, NO_TOKEN, edge uniforms for the final draw) and
/// `sample_children` over [`cdf_rows`] at the edge uniforms, widths 1 to 3.
fn acceptance_kernels_match_their_twins_at<D: Driver>(gpu: &GpuBackend<D>, vocab: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let batch = 3;
    for parents_one in [vec![-1, -1, 0, 0, 2], vec![-1, 0, 1]] {
        let nodes = parents_one.len();
        let p = distributions(batch * (nodes + 1), vocab, 0.5, seed + 1);
        let q = distributions(batch * (nodes + 1), vocab, 0.6, seed + 2);
        let mut tokens: Vec<u32> = (0..batch * nodes).map(|_| rng.below(vocab) as u32).collect();
        tokens[1] = NO_TOKEN;
        tokens[nodes] = vocab as u32 - 1;
        let parents = parents_one.repeat(batch);
        let u_accept: Vec<f32> = (0..batch * nodes).map(|_| rng.uniform() as f32 * 0.2).collect();
        for u_sample in EDGE_UNIFORMS.chunks(batch) {
            for omega in [vec![1.0; nodes], vec![3.0; nodes]] {
                let block = DraftBlock { batch, nodes, vocab, tokens: &tokens, parents: &parents, omega: &omega, u_accept: &u_accept, u_sample };
                let want = accept_twin::accept_block(&p, &q, &block).unwrap();
                assert_eq!(accept_on_host(gpu, &p, &q, &block).unwrap(), want, "vocab {vocab}, parents {parents_one:?}, u {u_sample:?}, omega {omega:?}");
            }
        }
    }
    let probs = cdf_rows(vocab, seed + 3);
    let rows: Vec<u32> = (0..5).flat_map(|r| [r; EDGE_UNIFORMS.len()]).collect();
    for width in 1..=3 {
        let uniforms: Vec<f32> = (0..rows.len()).flat_map(|i| (0..width).map(move |j| EDGE_UNIFORMS[(i + j) % EDGE_UNIFORMS.len()])).collect();
        let want = child_draws(&CpuBackend, &probs, vocab, width, &rows, &uniforms);
        assert_eq!(child_draws(gpu, &probs, vocab, width, &rows, &uniforms), want, "vocab {vocab}, width {width}");
        // The rounding row: lane 2's element (index 8) at u = 1 - 2^-24, through the fallback.
        let at = rows.iter().zip(uniforms.chunks(width)).position(|(&r, u)| r == 2 && u[0] == 1.0 - f32::EPSILON / 2.0).unwrap();
        assert_eq!(want[at * width], 8);
    }
}

/// The scalar load path (vocab not a multiple of 4, the last group cut short, five groups per
/// thread): both acceptance kernels match their twins exactly.
#[test]
fn acceptance_kernels_match_their_twins_at_a_vocabulary_not_a_multiple_of_4() {
    on_every_device!(acceptance_kernels_at_4099_on);
}

fn acceptance_kernels_at_4099_on<D: Driver>(gpu: &GpuBackend<D>) {
    acceptance_kernels_match_their_twins_at(gpu, 4099, 61);
}

/// The 128-bit load path at LlamaGen's vocabulary: both acceptance kernels match their twins
/// exactly, and the draw runs in ownership order (index 1024, thread 0's second group, comes
/// before index 4, thread 1's first).
#[test]
fn acceptance_kernels_match_their_twins_at_16384() {
    on_every_device!(acceptance_kernels_at_16384_on);
}

fn acceptance_kernels_at_16384_on<D: Driver>(gpu: &GpuBackend<D>) {
    acceptance_kernels_match_their_twins_at(gpu, 16384, 71);
    let vocab = 16384;
    let mut probs = vec![0.0f32; vocab];
    probs[4] = 0.5;
    probs[1024] = 0.5;
    assert_eq!(child_draws(gpu, &probs, vocab, 2, &[0, 0], &[0.25, 0.0, 0.75, 0.0]), vec![1024, 4, 4, 1024]);
}

/// The law of the kernels' inverse-CDF draw in ownership order: two children without replacement
/// from 12 tokens spread over a vocabulary of 3000 so that ownership order differs from index
/// order; the ordered pairs must follow `p(x) p(y) / (1 - p(x))` (chi-square at level 1e-4 over
/// 132 cells, 20,000 pairs), on the twin and through the kernel.
#[test]
fn the_ownership_order_draw_has_the_target_law() {
    child_pairs_follow_the_law(&CpuBackend, "twin");
    on_every_device!(child_pairs_follow_the_law_on);
}

fn child_pairs_follow_the_law_on<D: Driver>(gpu: &GpuBackend<D>) {
    child_pairs_follow_the_law(gpu, "kernel");
}

fn child_pairs_follow_the_law<B: Backend>(be: &B, label: &str) {
    let support = [0usize, 5, 1030, 1500, 2047, 2900, 13, 1024, 2999, 700, 1111, 2222];
    let (vocab, parents, launches) = (3000, 10_000, 2);
    let mut rng = Rng::new(83);
    let law = common::stats::random_distribution(&mut rng, support.len(), 0.5);
    let mut probs = vec![0.0f32; vocab];
    support.iter().zip(&law).for_each(|(&y, &v)| probs[y] = v);
    let mass: f64 = law.iter().map(|&v| f64::from(v)).sum();
    let p: Vec<f64> = law.iter().map(|&v| f64::from(v) / mass).collect();
    let cell = |x: usize, y: usize| x * support.len() + y;
    let mut want = vec![0.0; support.len() * support.len()];
    for (x, &px) in p.iter().enumerate() {
        for (y, &py) in p.iter().enumerate().filter(|&(y, _)| y != x) {
            want[cell(x, y)] = px * py / (1.0 - px);
        }
    }
    let mut counts = vec![0u64; want.len()];
    for _ in 0..launches {
        let uniforms: Vec<f32> = (0..parents * 2).map(|_| rng.uniform() as f32).collect();
        let tokens = child_draws(be, &probs, vocab, 2, &vec![0; parents], &uniforms);
        for pair in tokens.chunks(2) {
            assert_ne!(pair[0], pair[1], "{label}: a child drawn twice");
            let at = |t: u32| support.iter().position(|&y| y == t as usize).expect("a token of the support");
            counts[cell(at(pair[0]), at(pair[1]))] += 1;
        }
    }
    assert!(common::stats::passes_chi_square(&format!("child pairs ({label})"), &counts, &want), "{label}: the draw does not follow the law");
}

/// A graphed region (`Backend::graphed`) gives the results of running its work directly: the
/// first sighting runs directly, the second is captured and replayed, the third replays; new
/// inputs in the same buffers give new results; a buffer that must grow inside the region runs
/// the work recorded before it first; graphs turned off run everything directly.
#[test]
fn graphed_regions_replay_the_same_work() {
    // Backends of its own: the test reads the device counters and turns graphs off.
    #[cfg(feature = "emulator")]
    graphed_regions_replay_the_same_work_on(&spire::backend::EmuBackend::new().unwrap());
    #[cfg(feature = "cuda")]
    match spire::backend::CudaBackend::new(0) {
        Ok(gpu) => graphed_regions_replay_the_same_work_on(&gpu),
        Err(e) => println!("skipped: {e}"),
    }
}

fn graphed_regions_replay_the_same_work_on<D: Driver>(gpu: &GpuBackend<D>) {
    let (rows, dim) = (3, 64);
    let weight = gpu.weight_from_host(&random(dim * dim, 50)).unwrap();
    let norm = gpu.weight_from_host(&random(dim, 51)).unwrap();
    let (mut x, mut hidden, mut out) = (gpu.upload(&random(rows * dim, 52)).unwrap(), gpu.zeros(rows * dim).unwrap(), gpu.zeros(rows * dim).unwrap());
    let region = |x: &GpuBuf<D>, hidden: &mut GpuBuf<D>, out: &mut GpuBuf<D>| {
        gpu.rms_norm(x, &norm, 1e-5, dim, hidden)?;
        gpu.linear(hidden, &weight, rows, dim, dim, out)?;
        gpu.add_assign(out, x)
    };
    gpu.take_device_counts();
    for round in 0..3u64 {
        let input = random(rows * dim, 60 + round);
        gpu.upload_into(&mut x, &input).unwrap();
        region(&x, &mut hidden, &mut out).unwrap();
        let want = gpu.download(&out).unwrap();
        gpu.upload_into(&mut out, &vec![f32::NAN; rows * dim]).unwrap();
        gpu.graphed(&mut || region(&x, &mut hidden, &mut out)).unwrap();
        assert_eq!(gpu.download(&out).unwrap(), want, "round {round}");
    }
    let counts = gpu.take_device_counts().unwrap();
    assert_eq!((counts.graph_launches, counts.graphed), (2, 6), "{counts:?}");
    assert_eq!(gpu.graph_status(), None);

    // A buffer that grows inside the region: the work before it runs first, nothing is lost.
    let mut want = gpu.zeros(rows * dim).unwrap();
    gpu.rms_norm(&x, &norm, 1e-5, dim, &mut want).unwrap();
    let mut grown = gpu.zeros(0).unwrap();
    gpu.graphed(&mut || {
        gpu.rms_norm(&x, &norm, 1e-5, dim, &mut hidden)?;
        gpu.resize(&mut grown, rows * dim)?;
        gpu.add_assign(&mut grown, &hidden)
    })
    .unwrap();
    assert_eq!(gpu.download(&grown).unwrap(), gpu.download(&want).unwrap(), "grown inside a region");

    gpu.set_graphs(false).unwrap();
    gpu.take_device_counts();
    for _ in 0..3 {
        gpu.graphed(&mut || region(&x, &mut hidden, &mut out)).unwrap();
    }
    assert_eq!(gpu.take_device_counts().unwrap().graph_launches, 0);
    assert!(gpu.graph_status().is_some());
}
