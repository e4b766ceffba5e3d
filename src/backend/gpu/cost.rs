//! A cost model of the kernels: the bytes each launch moves and the FLOPs it does, as the kernels
//! of `kernels/*.cu` are written today (f32 activations, weights and KV in their stored type), and
//! the time that takes at a GPU's ceilings. It adds a forward pass's launches up into a decoding
//! step, next to the step's floor (its weights read once from HBM), so the gap between the
//! kernels and the roofline is a number (`cargo bench --bench cost_model`), and the kernel
//! benches print each kernel's predicted time beside the measured one.
//!
//! A launch takes `max(bytes / HBM bandwidth, FLOPs / peak, shortest kernel)`, plus a host launch
//! when it is not in a replayed graph. The shortest kernel and the launch cost are assumptions
//! (marked so below) for the first GPU run to check (`tools/gpu_check.sh`).

use super::geometry::{ATTN_GROUP_ROWS, SKINNY_ROWS};
use crate::backend::KvDtype;
use crate::weights::GptConfig;

/// A GPU's ceilings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ceilings {
    /// Name.
    pub name: &'static str,
    /// HBM bandwidth, bytes/s.
    pub hbm_bytes_per_s: f64,
    /// Dense bf16 tensor-core throughput, FLOP/s.
    pub tensor_flops: f64,
    /// FP32 (CUDA core) throughput, FLOP/s.
    pub fp32_flops: f64,
    /// Shortest duration of a kernel (launch ramp and tail), s. An assumption to check.
    pub min_kernel_s: f64,
    /// Host cost of one launch outside a graph, s. An assumption to check.
    pub launch_s: f64,
}

/// NVIDIA H100 SXM5 (datasheet: 3.35 TB/s HBM3, 989 TFLOP/s dense bf16, 67 TFLOP/s FP32).
pub const H100_SXM: Ceilings = Ceilings { name: "H100 SXM", hbm_bytes_per_s: 3.35e12, tensor_flops: 989e12, fp32_flops: 67e12, min_kernel_s: 1.5e-6, launch_s: 4e-6 };

/// NVIDIA H200 SXM (datasheet: 4.8 TB/s HBM3e; the H100's compute).
pub const H200: Ceilings = Ceilings { name: "H200", hbm_bytes_per_s: 4.8e12, ..H100_SXM };

/// What one launch does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Bytes read and written in device memory (re-reads that stay in cache not counted).
    pub bytes: f64,
    /// Floating-point operations.
    pub flops: f64,
    /// Whether the FLOPs run on tensor cores (bf16 GEMMs) rather than CUDA cores.
    pub tensor: bool,
}

impl Cost {
    /// Predicted time on `gpu`, in a replayed graph (`graphed`) or launched by the host.
    pub fn time(&self, gpu: &Ceilings, graphed: bool) -> f64 {
        let peak = if self.tensor { gpu.tensor_flops } else { gpu.fp32_flops };
        let device = (self.bytes / gpu.hbm_bytes_per_s).max(self.flops / peak).max(gpu.min_kernel_s);
        device + if graphed { 0.0 } else { gpu.launch_s }
    }
}

const F32: f64 = 4.0;

fn kv_bytes(kv: KvDtype) -> f64 {
    match kv {
        KvDtype::F32 => 4.0,
        KvDtype::Bf16 => 2.0,
    }
}

/// `rms_norm` of `rows` rows of `dim`.
pub fn rms_norm(rows: usize, dim: usize) -> Cost {
    Cost { bytes: (rows * dim) as f64 * 2.0 * F32 + dim as f64 * F32, flops: (rows * dim * 4) as f64, tensor: false }
}

/// `f32_to_bf16` of `len` values (the input of a bf16 GEMM).
pub fn cast(len: usize) -> Cost {
    Cost { bytes: len as f64 * (F32 + 2.0), flops: 0.0, tensor: false }
}

/// A GEMM `[rows, k] x [n, k]^T` with weights of `weight_bytes` per element (2: bf16, on tensor
/// cores through cuBLAS, or in the skinny kernel at decode row counts; 4: f32) and activations
/// of `x_bytes` per element (2 after a cast for cuBLAS; 4 as they are).
pub fn gemm(rows: usize, k: usize, n: usize, weight_bytes: f64, x_bytes: f64) -> Cost {
    let x = (rows * k) as f64 * x_bytes;
    let tensor = weight_bytes < F32 && x_bytes < F32;
    Cost { bytes: (k * n) as f64 * weight_bytes + x + (rows * n) as f64 * F32, flops: 2.0 * (rows * k * n) as f64, tensor }
}

/// `rope` of the q and k heads of `rows` rows of width `dim`.
pub fn rope(rows: usize, dim: usize) -> Cost {
    Cost { bytes: (rows * 2 * dim) as f64 * 2.0 * F32, flops: (rows * 2 * dim * 3) as f64, tensor: false }
}

/// `rope_kv_write` of `rows` qkv rows of width `3 * dim`: q, k and v read once, the rotated q
/// and k written back, k and v appended to a `kv` pool.
pub fn rope_kv_write(rows: usize, dim: usize, kv: KvDtype) -> Cost {
    Cost { bytes: (rows * dim) as f64 * (5.0 * F32 + 2.0 * kv_bytes(kv)), flops: (rows * 2 * dim * 3) as f64, tensor: false }
}

/// The skinny GEMM with the RMSNorm prologue and the SwiGLU epilogue: two weights `[n, k]` of
/// `weight_bytes` streamed together, f32 `x` and the norm's weight read once, one f32 output.
pub fn gemm_norm_swiglu(rows: usize, k: usize, n: usize, weight_bytes: f64) -> Cost {
    let one = gemm(rows, k, n, weight_bytes, F32);
    let bytes = 2.0 * (k * n) as f64 * weight_bytes + (rows * k + k) as f64 * F32 + (rows * n) as f64 * F32;
    Cost { bytes, flops: 2.0 * one.flops + (rows * (n * 4 + k * 3)) as f64, tensor: false }
}

/// The skinny QKV GEMM with the RMSNorm prologue and the RoPE + KV-append epilogue, for `rows`
/// rows of width `dim`: the `[3 dim, dim]` weight streamed, x and the norm's weight read, the
/// qkv rows written and k and v appended to a `kv` pool.
pub fn norm_qkv_rope_kv_write(rows: usize, dim: usize, weight_bytes: f64, kv: KvDtype) -> Cost {
    let gemm = gemm(rows, dim, 3 * dim, weight_bytes, F32);
    let extra = dim as f64 * F32 + (rows * 2 * dim) as f64 * kv_bytes(kv);
    Cost { bytes: gemm.bytes + extra, flops: gemm.flops + (rows * (dim * 3 + 2 * dim * 3)) as f64, tensor: false }
}

/// The skinny GEMM with the residual-add epilogue: the output read as well as written.
pub fn gemm_add(rows: usize, k: usize, n: usize, weight_bytes: f64) -> Cost {
    let one = gemm(rows, k, n, weight_bytes, F32);
    Cost { bytes: one.bytes + (rows * n) as f64 * F32, flops: one.flops + (rows * n) as f64, tensor: false }
}

/// `kv_write` of `rows` rows of width `dim` into a `kv` pool.
pub fn kv_write(rows: usize, dim: usize, kv: KvDtype) -> Cost {
    Cost { bytes: (rows * 2 * dim) as f64 * (F32 + kv_bytes(kv)), flops: 0.0, tensor: false }
}

/// The query rows of one forward pass as attention sees them: `rows` rows in `groups` groups
/// that read the same `keys` keys (kernels/attention.cu reads a group's keys once).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Queries {
    /// Query rows.
    pub rows: usize,
    /// Groups of rows with the same keys.
    pub groups: usize,
    /// Keys each row sees (at most).
    pub keys: usize,
}

impl Queries {
    /// `rows` rows each seeing keys of its own (decoding rows, a catch-up pass).
    pub fn separate(rows: usize, keys: usize) -> Self {
        Self { rows, groups: rows, keys }
    }

    /// `sequences` draft trees (or chains) of `nodes` rows each over `keys` keys (verification):
    /// a group serves up to [`ATTN_GROUP_ROWS`] nodes.
    pub fn trees(sequences: usize, nodes: usize, keys: usize) -> Self {
        Self { rows: sequences * nodes, groups: sequences * nodes.div_ceil(ATTN_GROUP_ROWS as usize), keys }
    }
}

/// `paged_attention` of `queries` over keys of width `dim` in a `kv` pool: each group reads its
/// keys and values once, each row its query and output.
pub fn attention(queries: Queries, dim: usize, kv: KvDtype) -> Cost {
    let Queries { rows, groups, keys } = queries;
    let kv_read = (groups * keys * 2 * dim) as f64 * kv_bytes(kv);
    Cost { bytes: kv_read + (rows * 2 * dim) as f64 * F32, flops: (rows * keys * 4 * dim) as f64, tensor: false }
}

/// An elementwise kernel over `len` values reading `inputs` buffers and writing one.
pub fn elementwise(len: usize, inputs: usize) -> Cost {
    Cost { bytes: (len * (inputs + 1)) as f64 * F32, flops: (len * inputs) as f64, tensor: false }
}

/// `embedding` of `rows` rows of `dim` from a table of `table_bytes` per element.
pub fn embedding(rows: usize, dim: usize, table_bytes: f64) -> Cost {
    Cost { bytes: (rows * dim) as f64 * (table_bytes + F32), flops: 0.0, tensor: false }
}

/// `process_logits` of `rows` output rows of `vocab` (with CFG: two logits rows each).
pub fn process_logits(rows: usize, vocab: usize, cfg: bool) -> Cost {
    let inputs = if cfg { 2.0 } else { 1.0 };
    Cost { bytes: (rows * vocab) as f64 * F32 * (inputs + 1.0), flops: (rows * vocab * 12) as f64, tensor: false }
}

/// `accept_block` of `batch` sequences of `nodes` nodes (an upper bound: every slot's p and q
/// read once).
pub fn accept(batch: usize, nodes: usize, vocab: usize) -> Cost {
    Cost { bytes: (2 * batch * (nodes + 1) * vocab) as f64 * F32, flops: (batch * (nodes + 1) * vocab * 4) as f64, tensor: false }
}

/// `sample_children`: `parents` distributions of `vocab`, `width` draws each (each draw scans
/// its row once).
pub fn sample_children(parents: usize, width: usize, vocab: usize) -> Cost {
    Cost { bytes: (parents * width * vocab) as f64 * F32, flops: (parents * width * vocab) as f64, tensor: false }
}

/// The launches of one model's forward pass, in order, with their costs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// Each launch's name and cost.
    pub launches: Vec<(&'static str, Cost)>,
}

impl Step {
    /// Add a launch.
    pub fn push(&mut self, name: &'static str, cost: Cost) {
        self.launches.push((name, cost));
    }

    /// Add every launch of `other`.
    pub fn extend(&mut self, other: Step) {
        self.launches.extend(other.launches);
    }

    /// Predicted time on `gpu`.
    pub fn time(&self, gpu: &Ceilings, graphed: bool) -> f64 {
        self.launches.iter().map(|(_, c)| c.time(gpu, graphed)).sum()
    }

    /// Bytes moved in all.
    pub fn bytes(&self) -> f64 {
        self.launches.iter().map(|(_, c)| c.bytes).sum()
    }

    /// Predicted time per kind of launch on `gpu`, largest first.
    pub fn by_kernel(&self, gpu: &Ceilings, graphed: bool) -> Vec<(&'static str, usize, f64)> {
        let mut kinds: Vec<(&'static str, usize, f64)> = Vec::new();
        for (name, cost) in &self.launches {
            match kinds.iter_mut().find(|k| k.0 == *name) {
                Some(k) => {
                    k.1 += 1;
                    k.2 += cost.time(gpu, graphed);
                }
                None => kinds.push((name, 1, cost.time(gpu, graphed))),
            }
        }
        kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
        kinds
    }
}

/// The precisions of a model on the device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Precision {
    /// Bytes per weight element (2: bf16 checkpoints, 4: f32).
    pub weight_bytes: f64,
    /// The KV pool's element type.
    pub kv: KvDtype,
}

/// The launches of one forward pass of `config` over the rows of `queries`, as
/// `model::Gpt::forward_planned` issues them (one embedding gather; per layer the attention
/// prologue (norm, QKV GEMM, RoPE, KV append), attention, the output projection with the
/// residual add, and the feed-forward (norm, SwiGLU, projection with the residual add); then the
/// head). At skinny row counts bf16 GEMMs read f32 activations as they are and a layer is 5
/// launches: the norms folded into the GEMMs after them, RoPE + KV append, SwiGLU and the
/// residual adds in GEMM epilogues; beyond, each bf16 GEMM casts its input, cuBLAS adds the
/// projections into the residual (beta = 1), and the norms, RoPE + KV append and SwiGLU are
/// launches of their own.
pub fn gpt_forward(config: &GptConfig, queries: Queries, precision: Precision) -> Step {
    let (d, h, v) = (config.dim, config.ffn_hidden(), config.vocab_size);
    let rows = queries.rows;
    let w = precision.weight_bytes;
    let mut step = Step::default();
    let skinny = |k: usize| w < F32 && rows <= SKINNY_ROWS as usize && k.is_multiple_of(8);
    let linear = |step: &mut Step, name: &'static str, k: usize, n: usize| {
        if w < F32 && !skinny(k) {
            step.push("f32_to_bf16", cast(rows * k));
            step.push(name, gemm(rows, k, n, w, 2.0));
        } else {
            step.push(name, gemm(rows, k, n, w, F32));
        }
    };
    step.push("embedding", embedding(rows, d, w));
    for _ in 0..config.n_layer {
        if skinny(d) {
            step.push("gemm qkv norm rope kv", norm_qkv_rope_kv_write(rows, d, w, precision.kv));
        } else {
            step.push("rms_norm", rms_norm(rows, d));
            linear(&mut step, "gemm qkv", d, 3 * d);
            step.push("rope_kv_write", rope_kv_write(rows, d, precision.kv));
        }
        step.push("paged_attention", attention(queries, d, precision.kv));
        if skinny(d) {
            step.push("gemm wo add", gemm_add(rows, d, d, w));
            step.push("gemm norm w1 w3 swiglu", gemm_norm_swiglu(rows, d, h, w));
        } else {
            linear(&mut step, "gemm wo add", d, d);
            step.push("rms_norm", rms_norm(rows, d));
            linear(&mut step, "gemm w1", d, h);
            linear(&mut step, "gemm w3", d, h);
            step.push("swiglu", elementwise(rows * h, 2));
        }
        if skinny(h) {
            step.push("gemm w2 add", gemm_add(rows, h, d, w));
        } else {
            linear(&mut step, "gemm w2 add", h, d);
        }
    }
    step.push("rms_norm", rms_norm(rows, d));
    linear(&mut step, "gemm output", d, v);
    step
}

/// The time to read every weight of `config` once from HBM: a decoding step's floor.
pub fn weights_floor(config: &GptConfig, weight_bytes: f64, gpu: &Ceilings) -> f64 {
    let (d, h, v) = (config.dim, config.ffn_hidden(), config.vocab_size);
    let per_layer = (4 * d * d + 3 * d * h) as f64;
    (per_layer * config.n_layer as f64 + (v * d) as f64) * weight_bytes / gpu.hbm_bytes_per_s
}

/// A plain AR step of `images` images with CFG (two rows each) at `context` keys: one target
/// forward, the logits processing and the draw.
pub fn ar_step(config: &GptConfig, images: usize, context: usize, precision: Precision) -> Step {
    let mut step = gpt_forward(config, Queries::separate(2 * images, context), precision);
    step.push("process_logits", process_logits(images, config.vocab_size, true));
    step.push("accept_block", accept(images, 0, config.vocab_size));
    step
}

/// A speculative step of `images` images with CFG, a draft model `draft` drafting a chain of
/// `len` tokens (a catch-up pass of `catch_up` rows per image, then one pass per further level),
/// the target verifying `len + 1` rows per image, at `context` keys.
pub fn chain_step(target: &GptConfig, draft: &GptConfig, images: usize, len: usize, catch_up: usize, context: usize, precision: Precision) -> Step {
    let v = target.vocab_size;
    let mut step = Step::default();
    step.extend(gpt_forward(draft, Queries::separate(2 * images * catch_up, context), precision));
    step.push("process_logits", process_logits(images, v, true));
    step.push("sample_children", sample_children(images, 1, v));
    for level in 1..len {
        step.extend(gpt_forward(draft, Queries::separate(2 * images, context + level), precision));
        step.push("process_logits", process_logits(images, v, true));
        step.push("sample_children", sample_children(images, 1, v));
    }
    step.extend(gpt_forward(target, Queries::trees(2 * images, len + 1, context + len), precision));
    step.push("process_logits", process_logits(images * (len + 1), v, true));
    step.push("accept_block", accept(images, len, v));
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xl() -> GptConfig {
        GptConfig::preset("GPT-XL", 384).expect("GPT-XL preset")
    }

    const BF16: Precision = Precision { weight_bytes: 2.0, kv: KvDtype::Bf16 };

    #[test]
    fn launches_are_bound_by_bytes_flops_or_the_shortest_kernel() {
        let gemm = gemm(2, 1280, 3840, 2.0, 4.0);
        assert!((gemm.time(&H100_SXM, true) - gemm.bytes / 3.35e12).abs() < 1e-12, "a decode GEMM streams its weights");
        let square = gemm_flops();
        assert!((square.time(&H100_SXM, true) - square.flops / 989e12).abs() < 1e-12, "a large GEMM is compute-bound");
        assert_eq!(rms_norm(2, 1280).time(&H100_SXM, true), 1.5e-6);
        assert_eq!(rms_norm(2, 1280).time(&H100_SXM, false), 1.5e-6 + 4e-6);
    }

    #[test]
    fn a_tree_reads_its_keys_once_per_group() {
        let one_row = attention(Queries::separate(1, 256), 1280, KvDtype::Bf16);
        let tree = attention(Queries::trees(1, 16, 256), 1280, KvDtype::Bf16);
        let queries_and_outputs = (15 * 2 * 1280) as f64 * F32;
        assert_eq!(tree.bytes, one_row.bytes + queries_and_outputs, "16 nodes: one group, the keys read once");
        assert_eq!(Queries::trees(2, 17, 256).groups, 4, "17 nodes need two groups per tree");
    }

    fn gemm_flops() -> Cost {
        gemm(4096, 4096, 4096, 2.0, 2.0)
    }

    #[test]
    fn an_xl_forward_reads_its_weights_once() {
        let config = xl();
        let step = gpt_forward(&config, Queries::separate(2, 1), BF16);
        let weights = weights_floor(&config, 2.0, &H100_SXM) * 3.35e12;
        assert!((1.5e9..1.7e9).contains(&weights), "GPT-XL's bf16 weights: {weights:e} bytes");
        assert!(step.bytes() > weights && step.bytes() < 1.02 * weights, "{:e} bytes moved against {weights:e}", step.bytes());
        // 36 layers of 5 launches (no casts at 2 rows: the skinny GEMMs with the norms, RoPE, the
        // KV append, SwiGLU and the residual adds fused), the embedding, the head's norm and GEMM.
        assert_eq!(step.launches.len(), 36 * 5 + 3);
        // A 32-row pass casts before each of its 5 GEMMs per layer and the head's (cuBLAS adds
        // into the residual), and runs the norms, RoPE + KV append and SwiGLU on their own.
        assert_eq!(gpt_forward(&config, Queries::separate(32, 1), BF16).launches.len(), 36 * 15 + 4);
    }
}
