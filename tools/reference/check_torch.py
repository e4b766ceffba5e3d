#!/usr/bin/env python3
"""Cross-check the golden data and the NumPy reference against a PyTorch re-implementation.

    /work/venv/bin/python tools/reference/check_torch.py [--dir tests/data/tiny]

The PyTorch side rebuilds LlamaGen's official module structure (nn.Embedding, nn.Linear, RMSNorm
modules, F.scaled_dot_product_attention with is_causal=True, pair-wise RoPE on a
[positions, head_dim/2, 2] cos/sin table with zero rows for the class token; nn.Conv2d,
nn.GroupNorm, F.interpolate(mode="nearest") for the VQ decoder), so that the stored weights load
with load_state_dict(strict=True) under the official names. It runs in float64 and must agree with
both the NumPy reference (recomputed) and the float32 golden tensors to 1e-6. It also reports,
for information, how far a float32 run with a float32 RoPE table (as the official code computes it)
lands from the golden values.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llamagen_ref as ref  # noqa: E402

TOL = 1e-6


# ------------------------------------------------------------------------------------- GPT

class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_table(grid, head_dim, base, dtype):
    """[1 + grid^2, head_dim/2, 2] cos/sin, first row zero; angles computed in dtype."""
    quarter = head_dim // 4
    freqs = 1.0 / (base ** (torch.arange(0, head_dim // 2, 2, dtype=dtype)[:quarter] / (head_dim // 2)))
    ang = torch.outer(torch.arange(grid, dtype=dtype), freqs)
    ang = torch.cat([ang[:, None, :].expand(grid, grid, quarter), ang[None, :, :].expand(grid, grid, quarter)], -1)
    table = torch.stack([ang.cos(), ang.sin()], -1).reshape(grid * grid, 2 * quarter, 2)
    return torch.cat([torch.zeros(1, 2 * quarter, 2, dtype=dtype), table])


def rotate(x, table):
    """x [b, s, h, d] rotated pair-wise by table [s, d/2, 2]."""
    xp = x.reshape(*x.shape[:-1], -1, 2)
    t = table[None, :, None]
    return torch.stack([xp[..., 0] * t[..., 0] - xp[..., 1] * t[..., 1],
                        xp[..., 1] * t[..., 0] + xp[..., 0] * t[..., 1]], -1).flatten(3)


class Attention(nn.Module):
    """Fused-qkv causal attention."""

    def __init__(self, dim, n_head):
        super().__init__()
        self.n_head, self.dim = n_head, dim
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x, table):
        b, s, _ = x.shape
        q, k, v = self.wqkv(x).split([self.dim] * 3, -1)
        q, k, v = (t.view(b, s, self.n_head, -1) for t in (q, k, v))
        q, k = rotate(q, table), rotate(k, table)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, s, self.dim))


class FeedForward(nn.Module):
    """SwiGLU."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm decoder layer."""

    def __init__(self, cfg):
        super().__init__()
        self.attention = Attention(cfg["dim"], cfg["n_head"])
        self.feed_forward = FeedForward(cfg["dim"], ref.ffn_hidden(cfg))
        self.attention_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.ffn_norm = RMSNorm(cfg["dim"], cfg["norm_eps"])

    def forward(self, x, table):
        h = x + self.attention(self.attention_norm(x), table)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    """Class table with the CFG null row."""

    def __init__(self, num_classes, dim):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)


class GPT(nn.Module):
    """Class-conditional LlamaGen transformer."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.cls_embedding = LabelEmbedder(cfg["num_classes"], cfg["dim"])
        self.tok_embeddings = nn.Embedding(cfg["vocab_size"], cfg["dim"])
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["n_layer"]))
        self.norm = RMSNorm(cfg["dim"], cfg["norm_eps"])
        self.output = nn.Linear(cfg["dim"], cfg["vocab_size"], bias=False)

    def forward(self, cls, tokens, table):
        h = torch.cat([self.cls_embedding.embedding_table(cls)[:, None], self.tok_embeddings(tokens)], 1)
        table = table[: h.shape[1]]
        for layer in self.layers:
            h = layer(h, table)
        return self.output(self.norm(h)), h


# ------------------------------------------------------------------------------------- VQ

class Resnet(nn.Module):
    """GroupNorm-swish-conv x2 with optional 1x1 shortcut."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class Attn(nn.Module):
    """Single-head spatial attention."""

    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, c, hh * ww) for m in (self.q, self.k, self.v))
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * c ** -0.5, dim=2)  # [b, query, key]
        return x + self.proj_out(torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww))


class Upsample(nn.Module):
    """Nearest x2 + conv."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """LlamaGen VQ decoder structure."""

    def __init__(self, cfg):
        super().__init__()
        ch, mult, g, nrb = cfg["ch"], cfg["ch_mult"], cfg["norm_groups"], cfg["num_res_blocks"]
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg["z_channels"], block_in, 3, padding=1)
        self.mid = nn.ModuleList([Resnet(block_in, block_in, g), Attn(block_in, g), Resnet(block_in, block_in, g)])
        self.conv_blocks = nn.ModuleList()
        for i, level in enumerate(reversed(range(len(mult)))):
            blk = nn.Module()
            blk.res, blk.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nrb + 1):
                blk.res.append(Resnet(block_in, ch * mult[level], g))
                block_in = ch * mult[level]
                if i == 0:
                    blk.attn.append(Attn(block_in, g))
            if i != len(mult) - 1:
                blk.upsample = Upsample(block_in)
            self.conv_blocks.append(blk)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg["out_channels"], 3, padding=1)

    def forward(self, h):
        h = self.conv_in(h)
        for m in self.mid:
            h = m(h)
        for blk in self.conv_blocks:
            for j, r in enumerate(blk.res):
                h = r(h)
                if len(blk.attn):
                    h = blk.attn[j](h)
            if hasattr(blk, "upsample"):
                h = blk.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantize(nn.Module):
    """Codebook holder."""

    def __init__(self, n, d):
        super().__init__()
        self.embedding = nn.Embedding(n, d)


class VQ(nn.Module):
    """Generation half of VQModel."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.quantize = Quantize(cfg["codebook_size"], cfg["codebook_embed_dim"])
        self.post_quant_conv = nn.Conv2d(cfg["codebook_embed_dim"], cfg["z_channels"], 1)
        self.decoder = Decoder(cfg)

    def forward(self, tokens, gh, gw):
        emb = self.quantize.embedding.weight
        if self.cfg["codebook_l2_norm"]:
            emb = F.normalize(emb, p=2, dim=-1)
        z = emb[tokens].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(z))


# ------------------------------------------------------------------------------------- main

def main():
    """Load the tiny model, run torch and NumPy, compare with golden.safetensors."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(HERE, "..", "..", "tests", "data", "tiny"))
    d = os.path.normpath(ap.parse_args().dir)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    gcfg, vcfg = cfg["gpt"], cfg["vq"]
    gold = load_file(os.path.join(d, "golden.safetensors"))
    gw = load_file(os.path.join(d, gcfg["file"]))
    vw = load_file(os.path.join(d, vcfg["file"]))
    tokens = gold["tokens"]
    cls = int(gold["class_id"][0])
    null = gcfg["num_classes"]
    grid = int(round(gcfg["block_size"] ** 0.5))
    scale = float(gold["cfg_scale"][0])
    failures = []

    def compare(name, a, b, tol=TOL):
        err = (a.double() - b.double()).abs().max().item()
        ok = err <= tol
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max |diff| {err:.3e} (tol {tol:g})")
        if not ok:
            failures.append(name)

    torch.set_grad_enabled(False)
    gpt = GPT(gcfg).double()
    gpt.load_state_dict({k: v.double() for k, v in gw.items()}, strict=True)
    table = rope_table(grid, gcfg["dim"] // gcfg["n_head"], gcfg["rope_base"], torch.float64)
    batch = torch.tensor([cls, null])
    logits, hidden = gpt(batch, tokens[None].expand(2, -1), table)  # one batch, cond + null rows
    t_cond, t_null = logits[0], logits[1]
    t_cfg = t_null + (t_cond - t_null) * scale

    vq = VQ(vcfg).double()
    vq.load_state_dict({k: v.double() for k, v in vw.items()}, strict=True)
    t_pix = vq(tokens, grid, grid)[0]

    # NumPy reference, recomputed.
    g64 = {k: v.double().numpy() for k, v in gw.items()}
    v64 = {k: v.double().numpy() for k, v in vw.items()}
    n_cond, n_hidden = ref.gpt_forward(g64, gcfg, cls, tokens.numpy(), return_hidden=True)
    n_null = ref.gpt_forward(g64, gcfg, null, tokens.numpy())
    n_pix = ref.vq_decode(v64, vcfg, tokens.numpy(), grid, grid)

    print("torch float64 vs NumPy float64:")
    compare("logits_cond", t_cond, torch.from_numpy(n_cond))
    compare("logits_null", t_null, torch.from_numpy(n_null))
    compare("hidden_cond", hidden[0], torch.from_numpy(n_hidden))
    compare("vq_pixels", t_pix, torch.from_numpy(n_pix))
    print("torch float64 vs golden (float32):")
    compare("logits_cond", t_cond, gold["logits_cond"])
    compare("logits_null", t_null, gold["logits_null"])
    compare("logits_cfg", t_cfg, gold["logits_cfg"])
    compare("hidden_cond", hidden[0], gold["hidden_cond"])
    compare("vq_pixels", t_pix, gold["vq_pixels"])
    rgb = (t_pix.float() * 127.5 + 128.0).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    same = torch.equal(rgb, gold["vq_rgb"])
    print(f"{'ok  ' if same else 'FAIL'} vq_rgb: torch mapping of float32 pixels equals golden")
    if not same:
        failures.append("vq_rgb")
    # The torchvision save_image path the official sampler uses, for the record.
    tv = ((t_pix.float().clamp(-1, 1) + 1) / 2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    print(f"info vq_rgb: torchvision-style (clamp, (x+1)/2*255+0.5) mapping agrees: {torch.equal(tv, gold['vq_rgb'])}")

    # Informational: float32 weights/activations and the float32 RoPE table the official code builds.
    gpt32 = GPT(gcfg)
    gpt32.load_state_dict(gw, strict=True)
    table32 = rope_table(grid, gcfg["dim"] // gcfg["n_head"], gcfg["rope_base"], torch.float32)
    l32, _ = gpt32(batch, tokens[None].expand(2, -1), table32)
    vq32 = VQ(vcfg)
    vq32.load_state_dict(vw, strict=True)
    p32 = vq32(tokens, grid, grid)[0]
    print("info float32 torch vs golden: logits_cond %.2e, logits_null %.2e, vq_pixels %.2e" % (
        (l32[0] - gold["logits_cond"]).abs().max(), (l32[1] - gold["logits_null"]).abs().max(),
        (p32 - gold["vq_pixels"]).abs().max()))

    print("check_torch: " + ("all passed" if not failures else f"FAILED: {failures}"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
