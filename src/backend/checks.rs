//! Argument checks shared by every backend: each op validates its lengths and indices here
//! before touching memory, so a bad call is an [`Error::Backend`] naming the op on every device.

use super::ops::check_parts;
use super::{AttentionLayout, ForwardPlan, Gather, KvShape, RowGather};
use crate::error::{Error, Result};

fn check(cond: bool, op: &str, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Backend(format!("{op}: {}", what())))
    }
}

fn slots_in_pool(slots: &[u32], shape: &KvShape, op: &str) -> Result<()> {
    let n = shape.num_slots();
    check(slots.iter().all(|&s| (s as usize) < n), op, || format!("KV slot out of range (pool has {n} slots)"))
}

/// `embedding`: gather `gather` of `plan` from a table of `table_len` values in rows of `dim`,
/// into an output of `out_len`; `tokens` says whether device tokens were given (an indirect
/// gather needs them; its ids are checked by the kernel). Returns the gather.
pub fn embedding(table_len: usize, plan: &ForwardPlan, gather: usize, tokens: bool, dim: usize, out_len: usize) -> Result<&Gather> {
    let part = plan.gathers.get(gather).ok_or_else(|| Error::Backend(format!("embedding: the plan has no gather {gather}")))?;
    let (ids, out_rows) = (&part.ids, &part.rows);
    let table_rows = table_len / dim.max(1);
    check(ids.len() == out_rows.len(), "embedding", || "ids and out_rows differ in length".into())?;
    check(!part.indirect || tokens || ids.is_empty(), "embedding", || "an indirect gather needs the device tokens".into())?;
    check(part.indirect || ids.iter().all(|&id| (id as usize) < table_rows), "embedding", || format!("id outside a table of {table_rows} rows"))?;
    check(out_rows.iter().all(|&r| (r as usize + 1) * dim <= out_len), "embedding", || "output row out of range".into())?;
    Ok(part)
}

/// `gather_rows`: `gather.rows` rows of `width` from `src_len` values into `out_len`, the
/// indices inside `words_len` words.
pub fn gather_rows(src_len: usize, width: usize, words_len: usize, gather: RowGather, out_len: usize) -> Result<()> {
    check(width > 0 && src_len.is_multiple_of(width) && out_len >= gather.rows * width, "gather_rows", || {
        format!("{} rows of width {width} from {src_len} values into {out_len}", gather.rows)
    })?;
    check_parts("gather_rows", words_len, &[(gather.at, gather.rows)])
}

/// `concat_rows`: `a` rows of `a_dim`, `b` rows of `b_dim`, `out` rows of both; returns the row
/// count. Either width may be 0 (the row count then comes from the other operands).
pub fn concat_rows(a_len: usize, a_dim: usize, b_len: usize, b_dim: usize, out_len: usize) -> Result<usize> {
    let rows = out_len.checked_div(a_dim + b_dim).unwrap_or(0);
    check(a_len == rows * a_dim && b_len == rows * b_dim && out_len == rows * (a_dim + b_dim), "concat_rows", || {
        format!("a {a_len} (width {a_dim}) and b {b_len} (width {b_dim}) do not make rows of out {out_len}")
    })?;
    Ok(rows)
}

/// `rms_norm`: rows of `dim` in and out, a weight of `dim`.
pub fn rms_norm(x_len: usize, weight_len: usize, dim: usize, out_len: usize) -> Result<()> {
    check(weight_len == dim && x_len == out_len && dim > 0 && x_len.is_multiple_of(dim), "rms_norm", || "shape mismatch".into())
}

/// `add_assign` and other elementwise ops: equal lengths.
pub fn same_len(op: &str, lens: &[usize]) -> Result<()> {
    check(lens.windows(2).all(|w| w[0] == w[1]), op, || format!("lengths differ: {lens:?}"))
}

/// `linear`: `x [rows, in_dim]`, `weight [out_dim, in_dim]`, `out [rows, out_dim]`.
pub fn linear(x_len: usize, weight_len: usize, rows: usize, in_dim: usize, out_dim: usize, out_len: usize) -> Result<()> {
    check(x_len >= rows * in_dim && weight_len == out_dim * in_dim && out_len >= rows * out_dim, "linear", || {
        format!("x {x_len} / weight {weight_len} / out {out_len} for [{rows}x{in_dim}]·[{out_dim}x{in_dim}]ᵀ")
    })
}

/// `rope`: `rows` rows of stride `row_stride`, the first `n_rot_heads` heads rotated by table
/// rows `positions` of a table of `table_len` values.
pub fn rope(x_len: usize, rows: usize, row_stride: usize, n_rot_heads: usize, head_dim: usize, table_len: usize, positions: &[u32]) -> Result<()> {
    let max_pos = table_len / head_dim.max(1);
    check(positions.len() == rows && x_len >= rows * row_stride, "rope", || "shape mismatch".into())?;
    check(n_rot_heads * head_dim <= row_stride && head_dim.is_multiple_of(2), "rope", || "heads wider than the row".into())?;
    check(positions.iter().all(|&p| (p as usize) < max_pos), "rope", || format!("position beyond the table ({max_pos})"))
}

/// `kv_write`: fused `qkv` rows for `slots` of layer `layer`.
pub fn kv_write(shape: &KvShape, layer: usize, qkv_len: usize, slots: &[u32]) -> Result<()> {
    check(layer < shape.n_layer, "kv_write", || format!("layer {layer} out of range"))?;
    slots_in_pool(slots, shape, "kv_write")?;
    check(qkv_len == slots.len() * 3 * shape.row_width(), "kv_write", || "qkv rows do not match slots".into())
}

/// `kv_copy`: slot pairs inside the pool.
pub fn kv_copy(shape: &KvShape, src: &[u32], dst: &[u32]) -> Result<()> {
    check(src.len() == dst.len(), "kv_copy", || "src and dst differ in length".into())?;
    slots_in_pool(src, shape, "kv_copy")?;
    slots_in_pool(dst, shape, "kv_copy")
}

/// `attention`: `qkv [rows, 3 * width]` and `out [rows, width]` against layer `layer`, with
/// every block the layout names inside the pool.
pub fn attention(shape: &KvShape, layer: usize, qkv_len: usize, out_len: usize, layout: &AttentionLayout) -> Result<()> {
    let width = layout.n_head * layout.head_dim;
    check(
        qkv_len == layout.rows() * 3 * width && out_len == layout.rows() * width && width == shape.row_width(),
        "attention",
        || "shape mismatch".into(),
    )?;
    check(layer < shape.n_layer, "attention", || format!("layer {layer} out of range"))?;
    check(layout.block_tables.iter().all(|&b| (b as usize) < shape.num_blocks), "attention", || "block table names a block outside the pool".into())
}

/// `layer_norm`: rows of `dim` in and out, an affine of `dim` values each when given.
pub fn layer_norm(x_len: usize, affine: Option<(usize, usize)>, dim: usize, out_len: usize) -> Result<()> {
    check(dim > 0 && x_len == out_len && x_len.is_multiple_of(dim), "layer_norm", || format!("x {x_len} / out {out_len} are not rows of {dim}"))?;
    check(affine.is_none_or(|(w, b)| w == dim && b == dim), "layer_norm", || format!("weight and bias must hold {dim} values"))
}

/// `add_bias`: rows of `width`, a bias of `width`.
pub fn add_bias(x_len: usize, bias_len: usize, width: usize) -> Result<()> {
    check(width > 0 && bias_len == width && x_len.is_multiple_of(width), "add_bias", || format!("x {x_len} is not rows of the bias width {bias_len} (width {width})"))
}

/// `dense_attention`: `qkv [rows, 3 * n_head * head_dim]` and `out [rows, n_head * head_dim]`,
/// the rows whole groups of `seq_len`.
pub fn dense_attention(qkv_len: usize, seq_len: usize, n_head: usize, head_dim: usize, out_len: usize) -> Result<()> {
    let width = n_head * head_dim;
    let rows = out_len.checked_div(width).unwrap_or(0);
    check(width > 0 && seq_len > 0, "dense_attention", || "empty heads or sequences".into())?;
    check(out_len == rows * width && qkv_len == 3 * out_len && rows.is_multiple_of(seq_len), "dense_attention", || {
        format!("qkv {qkv_len} / out {out_len} are not whole sequences of {seq_len} rows of width {width}")
    })
}

/// `ragged_attention`: `qkv [rows, 3 * n_head * head_dim]` and `out [rows, n_head * head_dim]`,
/// the rows the sum of the non-empty `seq_lens`.
pub fn ragged_attention(qkv_len: usize, seq_lens: &[usize], n_head: usize, head_dim: usize, out_len: usize) -> Result<()> {
    let (width, rows) = (n_head * head_dim, seq_lens.iter().sum::<usize>());
    check(width > 0 && !seq_lens.contains(&0), "ragged_attention", || "empty heads or sequences".into())?;
    check(out_len == rows * width && qkv_len == 3 * out_len, "ragged_attention", || {
        format!("qkv {qkv_len} / out {out_len} are not the {rows} rows of width {width} of sequences {seq_lens:?}")
    })
}

/// `modulate` and `add_gated`: rows of `dim` in `x_len` values, the same rows of `mods_width`
/// in `mods_len`, with columns `at..at + span` inside a `mods` row.
pub fn modulation(op: &str, x_len: usize, mods_len: usize, mods_width: usize, at: usize, dim: usize, span: usize) -> Result<()> {
    let rows = x_len.checked_div(dim).unwrap_or(0);
    check(dim > 0 && x_len == rows * dim && mods_len == rows * mods_width, op, || format!("x {x_len} (rows of {dim}) and mods {mods_len} (rows of {mods_width}) differ in rows"))?;
    check(at + span <= mods_width, op, || format!("columns {at}..{} outside mods rows of {mods_width}", at + span))
}
