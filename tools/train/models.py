"""Model definitions for the spire demo model (written for spire, LlamaGen-compatible layout).

Everything that ends up in weights/demo/ uses the official LlamaGen state-dict names, so the
Rust engine (and a LlamaGen checkpoint converter) see the same tensors:

* GPT            -- class-conditional LlamaGen GPT (c2i): class embedding with a null row,
                    RMSNorm, fused wqkv, SwiGLU, untied output, 2-D RoPE with zero cos/sin for the
                    class token.  Used for both the target and the small draft AR model.
* DraftHead      -- EAGLE/LANTERN-style head: fc([tok_emb(s_k) ; f_{k-1}]) -> one decoder layer.
* Decoder        -- the LlamaGen VQ `Decoder` structure (conv_in, mid, conv_blocks, norm_out,
                    conv_out) at a small width.
* Encoder, FSQ   -- the training-only half of the tokenizer (free design + FSQ quantiser).
"""
import math
from dataclasses import dataclass, asdict
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# GPT
# ----------------------------------------------------------------------------------------------
def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


@dataclass
class GPTConfig:
    dim: int = 256
    n_layer: int = 6
    n_head: int = 8
    vocab_size: int = 1000
    num_classes: int = 10
    cls_token_num: int = 1
    block_size: int = 64
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    multiple_of: int = 16
    ffn_dim_multiplier: Optional[float] = None
    # training-only (not exported)
    class_dropout_prob: float = 0.1
    token_dropout_p: float = 0.1
    resid_dropout_p: float = 0.1
    ffn_dropout_p: float = 0.1

    def ffn_hidden(self) -> int:
        h = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            h = int(self.ffn_dim_multiplier * h)
        return find_multiple(h, self.multiple_of)

    def export_dict(self, file: str) -> dict:
        keys = ["dim", "n_layer", "n_head", "vocab_size", "num_classes", "cls_token_num",
                "block_size", "rope_base", "norm_eps", "multiple_of", "ffn_dim_multiplier"]
        d = {"file": file}
        d.update({k: getattr(self, k) for k in keys})
        return d


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight


def rope_table_2d(grid: int, head_dim: int, base: float, cls_token_num: int):
    """cos, sin of shape [cls_token_num + grid*grid, head_dim // 2].

    Rotary pair j < head_dim/4 rotates with the row index, pair j >= head_dim/4 with the column
    index; the per-axis frequency of pair j (mod head_dim/4) is base^(-2j / (head_dim/2)).
    The class-token rows are all zero (cos = sin = 0), exactly as the official table.
    """
    half = head_dim // 2
    quarter = half // 2
    inv = 1.0 / (base ** (torch.arange(0, half, 2)[:quarter].float() / half))  # [quarter]
    t = torch.arange(grid).float()
    ang = torch.outer(t, inv)  # [grid, quarter]
    rows = ang[:, None, :].expand(grid, grid, quarter)   # depends on row index
    cols = ang[None, :, :].expand(grid, grid, quarter)   # depends on column index
    full = torch.cat([rows, cols], dim=-1).reshape(grid * grid, half)
    cos = torch.cat([torch.zeros(cls_token_num, half), torch.cos(full)], 0)
    sin = torch.cat([torch.zeros(cls_token_num, half), torch.sin(full)], 0)
    return cos, sin


def apply_rope(x, cos, sin):
    """x: [B, T, H, D]; cos/sin: [T, D/2] (or [B, T, D/2]); interleaved pairs (x[2i], x[2i+1])."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xf[..., 0], xf[..., 1]
    if cos.dim() == 2:
        c = cos[None, :, None, :]
        s = sin[None, :, None, :]
    else:
        c = cos[:, :, None, :]
        s = sin[:, :, None, :]
    out = torch.stack([a * c - b * s, b * c + a * s], dim=-1).flatten(-2)
    return out.type_as(x)


class Attention(nn.Module):
    def __init__(self, dim, n_head, resid_dropout_p=0.0):
        super().__init__()
        assert dim % n_head == 0
        self.dim, self.n_head, self.head_dim = dim, n_head, dim // n_head
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)  # rows q | k | v
        self.wo = nn.Linear(dim, dim, bias=False)
        self.resid_dropout = nn.Dropout(resid_dropout_p)

    def forward(self, x, cos, sin, mask=None):
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).split([self.dim, self.dim, self.dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim)
        k = k.view(B, T, self.n_head, self.head_dim)
        v = v.view(B, T, self.n_head, self.head_dim)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if mask is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(B, T, self.dim)
        return self.resid_dropout(self.wo(o))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, ffn_dropout_p=0.0):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.ffn_dropout = nn.Dropout(ffn_dropout_p)

    def forward(self, x):
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim, n_head, hidden, eps, resid_dropout_p=0.0, ffn_dropout_p=0.0):
        super().__init__()
        self.attention = Attention(dim, n_head, resid_dropout_p)
        self.feed_forward = FeedForward(dim, hidden, ffn_dropout_p)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_norm = RMSNorm(dim, eps)

    def forward(self, x, cos, sin, mask=None):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, dim, dropout_prob):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)  # last row = null class
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, labels, train: bool):
        if train and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels).unsqueeze(1)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        hidden = cfg.ffn_hidden()
        self.cls_embedding = LabelEmbedder(cfg.num_classes, cfg.dim, cfg.class_dropout_prob)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.tok_dropout = nn.Dropout(cfg.token_dropout_p)
        self.layers = nn.ModuleList([
            TransformerBlock(cfg.dim, cfg.n_head, hidden, cfg.norm_eps,
                             cfg.resid_dropout_p, cfg.ffn_dropout_p)
            for _ in range(cfg.n_layer)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        grid = int(round(math.sqrt(cfg.block_size)))
        assert grid * grid == cfg.block_size
        cos, sin = rope_table_2d(grid, cfg.dim // cfg.n_head, cfg.rope_base, cfg.cls_token_num)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(self.output.weight)

    def forward(self, labels, idx, force_null: bool = False):
        """labels: [B] class ids (num_classes = null); idx: [B, T] image tokens x_0..x_{T-1}.

        Sequence = [class, x_0, ..., x_{T-1}] (T+1 positions).  Returns (logits [B, T+1, V],
        hidden [B, T+1, dim] = last-layer output before the final norm).  logits[:, k] predicts
        image token x_k.
        """
        if force_null:
            labels = torch.full_like(labels, self.cfg.num_classes)
        c = self.cls_embedding(labels, train=self.training)
        h = torch.cat([c, self.tok_embeddings(idx)], dim=1)
        h = self.tok_dropout(h)
        T = h.shape[1]
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for layer in self.layers:
            h = layer(h, cos, sin)
        logits = self.output(self.norm(h)).float()
        return logits, h


# ----------------------------------------------------------------------------------------------
# Draft head (EAGLE / LANTERN style), see docs/ARCHITECTURE.md "Draft head"
# ----------------------------------------------------------------------------------------------
@dataclass
class HeadConfig:
    n_head: int = 8
    multiple_of: int = 16
    ffn_dim_multiplier: Optional[float] = None
    norm_eps: float = 1e-5

    def export_dict(self, file: str) -> dict:
        d = {"file": file}
        d.update(asdict(self))
        return d


class DraftHead(nn.Module):
    """x_k = fc([tok_embeddings(s_k) ; f_{k-1}]) -> one decoder layer -> g_k (pre-norm feature).

    Logits for the token at sequence position k+1 are target.output(target.norm(g_k)).
    tok_embeddings, norm, output and the RoPE table belong to the (frozen) target.
    """

    def __init__(self, dim: int, hcfg: HeadConfig):
        super().__init__()
        self.hcfg = hcfg
        hidden = GPTConfig(dim=dim, multiple_of=hcfg.multiple_of,
                           ffn_dim_multiplier=hcfg.ffn_dim_multiplier).ffn_hidden()
        self.fc = nn.Linear(2 * dim, dim, bias=False)
        self.layer = TransformerBlock(dim, hcfg.n_head, hidden, hcfg.norm_eps)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, emb, feat, cos, sin, mask=None):
        """emb, feat: [B, T, dim] (emb of s_k and f_{k-1} for each row); cos/sin per row."""
        x = self.fc(torch.cat([emb, feat], dim=-1))
        return self.layer(x, cos, sin, mask)


def head_teacher_forced(head: DraftHead, target: GPT, idx, feats):
    """Run the head over sequence positions 1..T with teacher-forced target features.

    idx: [B, T] image tokens x_0..x_{T-1} (s_k = x_{k-1} for k = 1..T); feats: target pre-norm
    hidden states f_0..f_{T-1} at sequence positions 0..T-1.  Row r (r = 0..T-1) of the result is
    sequence position k = r+1, attends causally to head rows 0..r, and its logits predict x_{r+1}.
    Returns (logits [B, T, V], g [B, T, dim]).
    """
    T = idx.shape[1]
    emb = target.tok_embeddings(idx)
    cos, sin = target.rope_cos[1:T + 1], target.rope_sin[1:T + 1]
    g = head(emb, feats, cos, sin)
    logits = target.output(target.norm(g)).float()
    return logits, g


def head_two_step(head: DraftHead, target: GPT, idx, feats):
    """Exact second draft step for every position at once.

    Rows A_k (k = 1..T) are the teacher-forced pass.  Rows B_k (k = 2..T) use the head's own
    output g_{k-1} (from A_{k-1}) instead of f_{k-1} and see A_1..A_{k-1} plus themselves, which
    is exactly the head's KV state at draft step 2 when positions < k-1 are verified.
    Returns (logits_A [B,T,V], g_A, logits_B [B,T-1,V]) where logits_B[:, j] predicts x_{j+2}.
    """
    B, T = idx.shape
    emb = target.tok_embeddings(idx)
    cos_a, sin_a = target.rope_cos[1:T + 1], target.rope_sin[1:T + 1]
    g_a = head(emb, feats, cos_a, sin_a)
    # B rows: positions 2..T, emb of s_k (k>=2) = idx[:, 1:], features g_{k-1} = g_a[:, :-1]
    emb_all = torch.cat([emb, emb[:, 1:]], dim=1)
    feat_all = torch.cat([feats, g_a[:, :-1]], dim=1)
    cos = torch.cat([cos_a, cos_a[1:]], 0)
    sin = torch.cat([sin_a, sin_a[1:]], 0)
    n = 2 * T - 1
    mask = torch.zeros(n, n, dtype=torch.bool, device=idx.device)
    mask[:T, :T] = torch.tril(torch.ones(T, T, dtype=torch.bool, device=idx.device))
    for j in range(T - 1):  # B row j is position k = j+2; sees A rows 0..j (positions 1..k-1)
        mask[T + j, : j + 1] = True
        mask[T + j, T + j] = True
    g_all = head(emb_all, feat_all, cos, sin, mask)
    logits = target.output(target.norm(g_all)).float()
    return logits[:, :T], g_all[:, :T], logits[:, T:]


# ----------------------------------------------------------------------------------------------
# Tokenizer: FSQ + encoder (training only) + LlamaGen-structured decoder
# ----------------------------------------------------------------------------------------------
class FSQ(nn.Module):
    """Finite scalar quantisation, levels [8,5,5,5] -> 1000 codes, 4-dim.

    Quantised value of dimension j is (d_j - L_j//2) / (L_j//2), d_j in 0..L_j-1; the code index
    is sum_j d_j * prod_{i<j} L_i (dimension 0 varies fastest).
    """

    def __init__(self, levels=(8, 5, 5, 5), eps=1e-3):
        super().__init__()
        self.levels = list(levels)
        L = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("L", L, persistent=False)
        self.register_buffer("half_width", torch.floor(L / 2), persistent=False)
        basis = [1]
        for l in levels[:-1]:
            basis.append(basis[-1] * l)
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.long), persistent=False)
        self.eps = eps
        self.n_codes = int(math.prod(levels))

    def bound(self, z):
        half_l = (self.L - 1) * (1 + self.eps) / 2
        offset = torch.where(self.L % 2 == 0, torch.tensor(0.5), torch.tensor(0.0))
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z):
        """z: [B, 4, H, W] -> (zq [B, 4, H, W], idx [B, H, W])."""
        zc = z.permute(0, 2, 3, 1)
        b = self.bound(zc)
        r = b + (torch.round(b) - b).detach()  # straight-through rounding
        zq = r / self.half_width
        d = (torch.round(b) + self.half_width).long()
        idx = (d * self.basis).sum(-1)
        return zq.permute(0, 3, 1, 2), idx

    def codebook(self):
        i = torch.arange(self.n_codes)
        d = (i[:, None] // self.basis[None, :]) % self.L.long()[None, :]
        return (d.float() - self.half_width) / self.half_width  # [1000, 4]


def swish(x):
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.cin != self.cout:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(B, C, H * W).transpose(1, 2)  # [B, HW, C]
        k = self.k(h).reshape(B, C, H * W)                  # [B, C, HW]
        v = self.v(h).reshape(B, C, H * W)                  # [B, C, HW]
        w = torch.softmax(torch.bmm(q, k) * (C ** -0.5), dim=2)  # [B, HWq, HWk]
        o = torch.bmm(v, w.transpose(1, 2)).reshape(B, C, H, W)
        return x + self.proj_out(o)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass
class VQConfig:
    codebook_size: int = 1000
    codebook_embed_dim: int = 4
    codebook_l2_norm: bool = False
    z_channels: int = 64
    ch: int = 32
    ch_mult: tuple = (1, 1, 2)
    num_res_blocks: int = 1
    out_channels: int = 3
    norm_groups: int = 8

    def export_dict(self, file: str) -> dict:
        d = {"file": file}
        d.update(asdict(self))
        d["ch_mult"] = list(self.ch_mult)
        return d


class Decoder(nn.Module):
    """LlamaGen VQ Decoder structure (same module tree and names), parameterised width."""

    def __init__(self, c: VQConfig):
        super().__init__()
        n = len(c.ch_mult)
        self.num_resolutions, self.num_res_blocks = n, c.num_res_blocks
        g = c.norm_groups
        block_in = c.ch * c.ch_mult[n - 1]
        self.conv_in = nn.Conv2d(c.z_channels, block_in, 3, 1, 1)
        self.mid = nn.ModuleList([ResnetBlock(block_in, block_in, g), AttnBlock(block_in, g),
                                  ResnetBlock(block_in, block_in, g)])
        self.conv_blocks = nn.ModuleList()
        for i_level in reversed(range(n)):
            blk = nn.Module()
            res, attn = nn.ModuleList(), nn.ModuleList()
            block_out = c.ch * c.ch_mult[i_level]
            for _ in range(c.num_res_blocks + 1):
                res.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
                if i_level == n - 1:
                    attn.append(AttnBlock(block_in, g))
            blk.res, blk.attn = res, attn
            if i_level != 0:
                blk.upsample = Upsample(block_in)
            self.conv_blocks.append(blk)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, c.out_channels, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for i_level, blk in enumerate(self.conv_blocks):
            for i in range(self.num_res_blocks + 1):
                h = blk.res[i](h)
                if len(blk.attn) > 0:
                    h = blk.attn[i](h)
            if i_level != self.num_resolutions - 1:
                h = blk.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class Encoder(nn.Module):
    """Free-design small encoder: 32x32x3 -> 8x8x4 (pre-FSQ)."""

    def __init__(self, c: VQConfig):
        super().__init__()
        g = c.norm_groups
        w = c.ch
        self.conv_in = nn.Conv2d(3, w, 3, 1, 1)
        self.res0 = ResnetBlock(w, w, g)
        self.down0 = nn.Conv2d(w, w, 4, 2, 1)          # 32 -> 16
        self.res1 = ResnetBlock(w, 2 * w, g)
        self.down1 = nn.Conv2d(2 * w, 2 * w, 4, 2, 1)  # 16 -> 8
        self.res2 = ResnetBlock(2 * w, 2 * w, g)
        self.attn = AttnBlock(2 * w, g)
        self.res3 = ResnetBlock(2 * w, 2 * w, g)
        self.norm_out = nn.GroupNorm(g, 2 * w, eps=1e-6)
        self.quant_conv = nn.Conv2d(2 * w, c.codebook_embed_dim, 1)

    def forward(self, x):
        h = self.conv_in(x)
        h = self.down0(self.res0(h))
        h = self.down1(self.res1(h))
        h = self.res3(self.attn(self.res2(h)))
        return self.quant_conv(swish(self.norm_out(h)))


class Tokenizer(nn.Module):
    def __init__(self, c: VQConfig):
        super().__init__()
        self.cfg = c
        self.encoder = Encoder(c)
        self.fsq = FSQ()
        assert self.fsq.n_codes == c.codebook_size
        self.post_quant_conv = nn.Conv2d(c.codebook_embed_dim, c.z_channels, 1)
        self.decoder = Decoder(c)

    def encode(self, x):
        return self.fsq(self.encoder(x))

    def decode_zq(self, zq):
        return self.decoder(self.post_quant_conv(zq))

    def decode_tokens(self, idx):
        """idx: [B, 8, 8] code ids -> image; the explicit-codebook path the engine uses."""
        cb = self.fsq.codebook().to(self.post_quant_conv.weight)
        zq = cb[idx].permute(0, 3, 1, 2)
        return self.decode_zq(zq)

    def forward(self, x):
        zq, idx = self.encode(x)
        return self.decode_zq(zq), idx
