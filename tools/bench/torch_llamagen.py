"""PyTorch baseline for `spire` on the same GPU: LlamaGen class-conditional GPT decoding.

A faithful re-implementation of the LlamaGen c2i forward (the architecture of
FoundationVision/LlamaGen autoregressive/models/gpt.py: class token with the all-zero RoPE row,
fused wqkv, 2-D RoPE on interleaved pairs, SwiGLU, RMSNorm) with a static KV cache (gpt-fast
style), random weights of the chosen size, CFG as a batch of 2. It times plain AR generation of
one image, eager and with torch.compile, so spire's `cargo bench --features cuda --bench gpt_xl`
numbers can be compared on the same machine.

    python tools/bench/torch_llamagen.py --model GPT-XL --image-size 256 --device cuda --dtype bf16
    python tools/bench/torch_llamagen.py --model tiny --device cpu --dtype f32   # smoke test
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

PRESETS = {  # layers, heads, dim
    "tiny": (2, 4, 64),
    "GPT-B": (12, 12, 768),
    "GPT-L": (24, 16, 1024),
    "GPT-XL": (36, 20, 1280),
    "GPT-XXL": (48, 24, 1536),
}


def ffn_hidden(dim, multiple_of=256):
    hidden = int(2 * 4 * dim / 3)
    return (hidden + multiple_of - 1) // multiple_of * multiple_of


def rope_table(grid, head_dim, base=10000.0):
    """[1 + grid^2, head_dim/2, 2] (cos, sin); row 0 (class token) is all zero, as official."""
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    t = torch.arange(grid).float()
    f = torch.outer(t, freqs)
    grid_f = torch.cat([f[:, None, :].expand(-1, grid, -1), f[None, :, :].expand(grid, -1, -1)], dim=-1)
    cache = torch.stack([torch.cos(grid_f), torch.sin(grid_f)], dim=-1).flatten(0, 1)
    return torch.cat([torch.zeros(1, half, 2), cache])


def rotate(x, cs):
    """x: [B, S, H, D]; cs: [S, D/2, 2]; rotation of interleaved pairs."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    cs = cs.view(1, xs.size(1), 1, xs.size(3), 2)
    out = torch.stack([xs[..., 0] * cs[..., 0] - xs[..., 1] * cs[..., 1], xs[..., 1] * cs[..., 0] + xs[..., 0] * cs[..., 1]], -1)
    return out.flatten(3).type_as(x)


class Model(torch.nn.Module):
    """LlamaGen GPT with a static KV cache for `batch` sequences of up to `max_len` tokens."""

    def __init__(self, layers, heads, dim, vocab, classes, grid, batch, dtype, device):
        super().__init__()
        self.layers, self.heads, self.dim, self.hd = layers, heads, dim, dim // heads
        h = ffn_hidden(dim)
        g = torch.Generator().manual_seed(0)

        def w(*shape, scale=None):
            scale = scale or 1.0 / math.sqrt(shape[-1])
            return torch.nn.Parameter((torch.randn(*shape, generator=g) * scale).to(device, dtype), requires_grad=False)

        self.tok = w(vocab, dim, scale=1.0)
        self.cls = w(classes + 1, dim, scale=1.0)
        self.wqkv = torch.nn.ParameterList([w(3 * dim, dim) for _ in range(layers)])
        self.wo = torch.nn.ParameterList([w(dim, dim) for _ in range(layers)])
        self.w1 = torch.nn.ParameterList([w(h, dim) for _ in range(layers)])
        self.w3 = torch.nn.ParameterList([w(h, dim) for _ in range(layers)])
        self.w2 = torch.nn.ParameterList([w(dim, h) for _ in range(layers)])
        self.norms = torch.nn.Parameter(torch.ones(2 * layers + 1, dim, device=device, dtype=dtype), requires_grad=False)
        self.out = w(vocab, dim)
        max_len = 1 + grid * grid
        self.rope = rope_table(grid, self.hd).to(device)
        self.k = torch.zeros(layers, batch, heads, max_len, self.hd, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.mask = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool, device=device))

    def norm(self, x, i):
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)).type_as(x) * self.norms[i]

    def forward(self, x, pos):
        """x: [B, 1, dim] embedded input at position tensor pos ([1]); returns logits [B, vocab]."""
        cs = self.rope[pos]
        mask = self.mask[pos][None, None]
        for i in range(self.layers):
            h = self.norm(x, 2 * i)
            q, k, v = F.linear(h, self.wqkv[i]).split(self.dim, -1)
            q, k, v = (t.view(x.size(0), 1, self.heads, self.hd) for t in (q, k, v))
            q, k = rotate(q, cs), rotate(k, cs)
            self.k[i][:, :, pos] = k.transpose(1, 2)
            self.v[i][:, :, pos] = v.transpose(1, 2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), self.k[i], self.v[i], attn_mask=mask)
            x = x + F.linear(a.transpose(1, 2).reshape(x.size(0), 1, self.dim), self.wo[i])
            h = self.norm(x, 2 * i + 1)
            x = x + F.linear(F.silu(F.linear(h, self.w1[i])) * F.linear(h, self.w3[i]), self.w2[i])
        return F.linear(self.norm(x, 2 * self.layers), self.out)[:, 0].float()


def generate(model, step, class_id, classes, tokens, cfg, device):
    """Plain AR with CFG (batch of cond and null class), temperature 1."""
    labels = torch.tensor([class_id, classes], device=device)
    x = model.cls[labels][:, None]
    out = []
    for i in range(tokens):
        logits = step(x, torch.tensor([i], device=device))
        cond, uncond = logits[0], logits[1]
        probs = torch.softmax(uncond + (cond - uncond) * cfg, -1)
        t = torch.multinomial(probs, 1)
        out.append(t)
        x = model.tok[t.expand(2)][:, None]
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="GPT-XL", choices=sorted(PRESETS))
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--cfg", type=float, default=1.75)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile run")
    a = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    layers, heads, dim = PRESETS[a.model]
    grid = a.image_size // 16
    model = Model(layers, heads, dim, 16384, 1000, grid, 2, dtype, a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    results = {"model": a.model, "image_size": a.image_size, "device": a.device, "dtype": a.dtype, "torch": torch.__version__}
    if a.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    modes = [("eager", model.forward)] + ([] if a.no_compile else [("compile", torch.compile(model.forward, mode="reduce-overhead"))])
    with torch.inference_mode():
        for name, step in modes:
            generate(model, step, 207, 1000, grid * grid, a.cfg, a.device)  # warm-up (and compilation)
            sync()
            start = time.perf_counter()
            for i in range(a.images):
                generate(model, step, i, 1000, grid * grid, a.cfg, a.device)
            sync()
            ms = (time.perf_counter() - start) * 1e3 / a.images
            results[f"{name}_ms_per_image"] = round(ms, 2)
            results[f"{name}_tokens_per_s"] = round(grid * grid * 1e3 / ms, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
