"""Independent NumPy (float64) reference for LlamaGen class-conditional generation.

Written from the architecture description in docs/ARCHITECTURE.md, checked line by line against
the behaviour of the official LlamaGen code (autoregressive/models/gpt.py and
tokenizer/tokenizer_image/vq_model.py). Everything is plain NumPy in float64 and deliberately
unoptimised: it exists to produce golden numbers for spire's Rust tests, not to be fast.

Weights are dicts mapping the official state-dict names to NumPy arrays; configs are the "gpt" and
"vq" sections of spire's config.json (plain dicts).

Contents
  GPT:  ffn_hidden, rms_norm, rope_table_2d, apply_rope, attention, feed_forward,
        gpt_forward, cfg_mix
  VQ:   codebook_lookup, conv2d, group_norm, swish, resnet_block, attn_block,
        upsample_nearest, vq_decode, pixels_to_rgb
  I/O:  load_safetensors_f64
"""

import numpy as np


# ---------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------

def load_safetensors_f64(path):
    """Load a safetensors file into a dict of float64 NumPy arrays (bf16 files need torch)."""
    try:
        from safetensors.numpy import load_file

        tensors = load_file(path)
    except (TypeError, ValueError):
        # NumPy has no bfloat16: fall back to torch for such files.
        import torch
        from safetensors.torch import load_file as load_torch

        tensors = {k: v.to(torch.float64).numpy() for k, v in load_torch(path).items()}
    return {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}


# ---------------------------------------------------------------------------------------------
# GPT
# ---------------------------------------------------------------------------------------------

def find_multiple(n, k):
    """Round n up to a multiple of k (LlamaGen's find_multiple)."""
    return n if n % k == 0 else n + k - (n % k)


def ffn_hidden(cfg):
    """SwiGLU hidden width: find_multiple(int(mult * int(2 * 4 * dim / 3)), multiple_of)."""
    hidden = int(2 * (4 * cfg["dim"]) / 3)
    mult = cfg.get("ffn_dim_multiplier")
    if mult is not None:
        hidden = int(mult * hidden)
    return find_multiple(hidden, cfg["multiple_of"])


def rms_norm(x, weight, eps):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_table_2d(grid_size, head_dim, base, cls_token_num):
    """The 2-D RoPE cos/sin table, shape [cls_token_num + grid_size**2, head_dim // 2, 2].

    Row r of the table serves sequence position r. The first cls_token_num rows are all zero
    (cos = sin = 0: the class token's q and k become zero, an official quirk). Row
    cls_token_num + g serves grid cell g = (row, col) in row-major order. Within a head, rotary
    pair p < head_dim/4 rotates by row * f[p], pair p >= head_dim/4 by col * f[p - head_dim/4],
    where f[j] = base ** (-(2j) / (head_dim/2)) for j < head_dim/4. [..., 0] is cos, [..., 1] sin.
    """
    half = head_dim // 2
    quarter = half // 2
    freqs = 1.0 / (float(base) ** (np.arange(0, half, 2)[:quarter].astype(np.float64) / half))
    t = np.arange(grid_size, dtype=np.float64)
    axis = np.outer(t, freqs)  # [grid, quarter]
    rows = np.repeat(axis[:, None, :], grid_size, axis=1)  # angle from the row index
    cols = np.repeat(axis[None, :, :], grid_size, axis=0)  # angle from the column index
    angles = np.concatenate([rows, cols], axis=-1).reshape(grid_size * grid_size, 2 * quarter)
    cache = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    zeros = np.zeros((cls_token_num, 2 * quarter, 2))
    return np.concatenate([zeros, cache], axis=0)


def apply_rope(x, table):
    """Rotate interleaved pairs (x[2p], x[2p+1]) of x [seq, heads, head_dim] by table [seq, head_dim/2, 2].

    out[2p]   = x[2p] * cos - x[2p+1] * sin
    out[2p+1] = x[2p+1] * cos + x[2p] * sin
    """
    seq, heads, head_dim = x.shape
    pairs = x.reshape(seq, heads, head_dim // 2, 2)
    cos = table[:, None, :, 0]
    sin = table[:, None, :, 1]
    a, b = pairs[..., 0], pairs[..., 1]
    out = np.stack([a * cos - b * sin, b * cos + a * sin], axis=-1)
    return out.reshape(seq, heads, head_dim)


def softmax(x, axis=-1):
    """Numerically stable softmax."""
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def attention(x, w, prefix, n_head, table):
    """Causal multi-head self-attention of one LlamaGen layer on x [seq, dim] (already normed).

    wqkv [3*dim, dim] is split by rows into q | k | v, heads are contiguous head_dim slices, RoPE
    is applied to q and k, scores are scaled by 1/sqrt(head_dim), a key is visible to a query iff
    its position is <= the query's, and the heads' outputs are concatenated and projected by wo.
    """
    seq, dim = x.shape
    head_dim = dim // n_head
    qkv = x @ w[prefix + "attention.wqkv.weight"].T
    q, k, v = qkv[:, :dim], qkv[:, dim:2 * dim], qkv[:, 2 * dim:]
    q = apply_rope(q.reshape(seq, n_head, head_dim), table)
    k = apply_rope(k.reshape(seq, n_head, head_dim), table)
    v = v.reshape(seq, n_head, head_dim)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim)
    future = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    scores = np.where(future[None], -np.inf, scores)
    probs = softmax(scores, axis=-1)
    out = np.einsum("hqk,khd->qhd", probs, v).reshape(seq, dim)
    return out @ w[prefix + "attention.wo.weight"].T


def silu(x):
    """SiLU / swish: x * sigmoid(x)."""
    return x / (1.0 + np.exp(-x))


def feed_forward(x, w, prefix):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x)."""
    gate = silu(x @ w[prefix + "feed_forward.w1.weight"].T)
    up = x @ w[prefix + "feed_forward.w3.weight"].T
    return (gate * up) @ w[prefix + "feed_forward.w2.weight"].T


def gpt_forward(w, cfg, class_id, tokens, return_hidden=False):
    """Logits [1 + len(tokens), vocab] of the class-conditional GPT on [class_id, tokens...].

    Sequence position 0 holds the class embedding (row class_id of
    cls_embedding.embedding_table; class_id == num_classes is the CFG null class), position
    k >= 1 holds tok_embeddings[tokens[k-1]]. Position k uses RoPE row k (row 0 is zero, row
    k >= 1 is grid cell k-1). Each layer: h = x + attn(attention_norm(x));
    x = h + ffn(ffn_norm(h)). Then norm and output. Logits at position k predict image token k.
    With return_hidden, also returns the last layer's hidden state before the final norm.
    """
    assert cfg.get("cls_token_num", 1) == 1, "class-conditional models have one class token"
    tokens = np.asarray(tokens, dtype=np.int64)
    seq = 1 + len(tokens)
    grid = int(round(cfg["block_size"] ** 0.5))
    assert grid * grid == cfg["block_size"]
    assert seq <= 1 + cfg["block_size"], "sequence longer than the RoPE table"
    eps = cfg["norm_eps"]
    head_dim = cfg["dim"] // cfg["n_head"]
    table = rope_table_2d(grid, head_dim, cfg["rope_base"], 1)[:seq]

    x = np.concatenate([
        w["cls_embedding.embedding_table.weight"][[int(class_id)]],
        w["tok_embeddings.weight"][tokens],
    ], axis=0)
    for i in range(cfg["n_layer"]):
        p = f"layers.{i}."
        h = x + attention(rms_norm(x, w[p + "attention_norm.weight"], eps), w, p, cfg["n_head"], table)
        x = h + feed_forward(rms_norm(h, w[p + "ffn_norm.weight"], eps), w, p)
    logits = rms_norm(x, w["norm.weight"], eps) @ w["output.weight"].T
    return (logits, x) if return_hidden else logits


def cfg_mix(cond, uncond, scale):
    """Classifier-free guidance on raw logits: uncond + (cond - uncond) * scale."""
    return uncond + (cond - uncond) * scale


# ---------------------------------------------------------------------------------------------
# VQ decoder
# ---------------------------------------------------------------------------------------------

def codebook_lookup(w, cfg, tokens, grid_h, grid_w):
    """Quantised latent [embed_dim, grid_h, grid_w] for row-major tokens.

    Rows of quantize.embedding.weight are l2-normalised first when codebook_l2_norm
    (v / max(||v||, 1e-12), as F.normalize). Token i goes to row i // grid_w, column i % grid_w.
    """
    emb = w["quantize.embedding.weight"]
    if cfg["codebook_l2_norm"]:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    z = emb[np.asarray(tokens, dtype=np.int64)]  # [h*w, c]
    return z.reshape(grid_h, grid_w, -1).transpose(2, 0, 1)


def conv2d(x, weight, bias, padding):
    """Stride-1 2-D convolution (cross-correlation) of x [C, H, W] with weight [O, C, kh, kw], zero padding."""
    c, h, wd = x.shape
    o, c2, kh, kw = weight.shape
    assert c == c2
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    out_h = h + 2 * padding - kh + 1
    out_w = wd + 2 * padding - kw + 1
    out = np.zeros((o, out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + out_h, j:j + out_w]  # [C, out_h, out_w]
            out += np.einsum("oc,chw->ohw", weight[:, :, i, j], patch)
    return out + bias[:, None, None]


def group_norm(x, weight, bias, groups, eps=1e-6):
    """GroupNorm of x [C, H, W]: per group of C/groups channels, biased variance, then affine."""
    c, h, wd = x.shape
    g = x.reshape(groups, c // groups, h, wd)
    mean = g.mean(axis=(1, 2, 3), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
    g = (g - mean) / np.sqrt(var + eps)
    return g.reshape(c, h, wd) * weight[:, None, None] + bias[:, None, None]


def swish(x):
    """Swish nonlinearity x * sigmoid(x)."""
    return x / (1.0 + np.exp(-x))


def _conv(w, name, x, padding):
    """Apply the conv named name (weight and bias) to x."""
    return conv2d(x, w[name + ".weight"], w[name + ".bias"], padding)


def _norm(w, name, x, groups):
    """Apply the GroupNorm named name (eps 1e-6) to x."""
    return group_norm(x, w[name + ".weight"], w[name + ".bias"], groups)


def resnet_block(w, prefix, x, groups):
    """ResnetBlock: conv2(swish(norm2(conv1(swish(norm1(x)))))) + shortcut(x).

    The shortcut is the 1x1 conv nin_shortcut when the block changes the channel count
    (detected by the presence of prefix.nin_shortcut.weight), else the identity.
    """
    h = _conv(w, prefix + "conv1", swish(_norm(w, prefix + "norm1", x, groups)), 1)
    h = _conv(w, prefix + "conv2", swish(_norm(w, prefix + "norm2", h, groups)), 1)
    if prefix + "nin_shortcut.weight" in w:
        x = _conv(w, prefix + "nin_shortcut", x, 0)
    return x + h


def attn_block(w, prefix, x, groups):
    """AttnBlock: single-head spatial self-attention with 1x1 q/k/v/proj_out convs, scale 1/sqrt(C), residual."""
    c, h, wd = x.shape
    n = _norm(w, prefix + "norm", x, groups)
    q = _conv(w, prefix + "q", n, 0).reshape(c, h * wd)
    k = _conv(w, prefix + "k", n, 0).reshape(c, h * wd)
    v = _conv(w, prefix + "v", n, 0).reshape(c, h * wd)
    probs = softmax((q.T @ k) / np.sqrt(c), axis=-1)  # [query, key]
    out = (v @ probs.T).reshape(c, h, wd)
    return x + _conv(w, prefix + "proj_out", out, 0)


def upsample_nearest(x):
    """Nearest-neighbour x2 upsampling of x [C, H, W]."""
    return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)


def vq_decode(w, cfg, tokens, grid_h, grid_w):
    """Decoder output [out_channels, grid_h * 2**(L-1), grid_w * 2**(L-1)] (roughly in [-1, 1]).

    codebook_lookup -> post_quant_conv (1x1) -> decoder.conv_in (3x3) -> decoder.mid
    (ResNet, attention, ResNet) -> conv_blocks.0 .. conv_blocks.{L-1}, L = len(ch_mult), walking
    ch_mult in reverse: stage i has num_res_blocks + 1 ResNet blocks, each followed by an
    attention block in stage 0 only (the lowest resolution), and every stage but the last ends
    with nearest x2 upsampling + 3x3 conv -> norm_out -> swish -> conv_out (3x3).
    """
    groups = cfg["norm_groups"]
    levels = len(cfg["ch_mult"])
    z = codebook_lookup(w, cfg, tokens, grid_h, grid_w)
    h = _conv(w, "post_quant_conv", z, 0)
    h = _conv(w, "decoder.conv_in", h, 1)
    h = resnet_block(w, "decoder.mid.0.", h, groups)
    h = attn_block(w, "decoder.mid.1.", h, groups)
    h = resnet_block(w, "decoder.mid.2.", h, groups)
    for i in range(levels):
        p = f"decoder.conv_blocks.{i}."
        for j in range(cfg["num_res_blocks"] + 1):
            h = resnet_block(w, p + f"res.{j}.", h, groups)
            if i == 0:
                h = attn_block(w, p + f"attn.{j}.", h, groups)
        if i != levels - 1:
            h = _conv(w, p + "upsample.conv", upsample_nearest(h), 1)
    h = swish(_norm(w, "decoder.norm_out", h, groups))
    return _conv(w, "decoder.conv_out", h, 1)


def pixels_to_rgb(x):
    """Map decoder output [3, H, W] to uint8 [H, W, 3]: clamp(127.5 * x + 128, 0, 255), truncated."""
    y = np.clip(127.5 * np.asarray(x, dtype=np.float64) + 128.0, 0.0, 255.0)
    return np.ascontiguousarray(np.floor(y).astype(np.uint8).transpose(1, 2, 0))
