"""Consistency checks of models.py against naive, independently written per-position references.

* GPT forward vs a loop-per-position implementation with complex-number RoPE, written from the
  rules in docs/ARCHITECTURE.md (class token: q, k zeroed by cos = sin = 0; position k >= 1 uses
  grid cell k-1; first head_dim/4 pairs rotate by row, last head_dim/4 by column).
* head_two_step vs incremental drafting with an explicit per-step KV cache (what the engine does).
* FSQ: codebook[encode index] == quantised vector; tensor names of every exported module.

usage: python selfcheck.py      (a few seconds; prints OK or raises)
"""
import math

import torch

from models import (GPT, GPTConfig, DraftHead, HeadConfig, FSQ, Tokenizer, VQConfig,
                    head_two_step, head_teacher_forced)

torch.manual_seed(0)
torch.set_num_threads(2)


def rms(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope_complex(v, pos, grid, base):
    """v: [H, D] at sequence position pos -> rotated (naive, complex numbers)."""
    H, D = v.shape
    if pos == 0:
        return torch.zeros_like(v)
    r, c = divmod(pos - 1, grid)
    half, quarter = D // 2, D // 4
    out = torch.empty_like(v)
    for j in range(half):
        jj = j if j < quarter else j - quarter
        ang = (r if j < quarter else c) * base ** (-2 * jj / half)
        z = torch.complex(v[:, 2 * j], v[:, 2 * j + 1]) * complex(math.cos(ang), math.sin(ang))
        out[:, 2 * j], out[:, 2 * j + 1] = z.real, z.imag
    return out


def block_step(layer, x, pos, cache, n_head, grid, base, eps):
    """One position through a TransformerBlock with an explicit list KV cache."""
    sd = {k: v for k, v in layer.state_dict().items()}
    D = x.shape[-1]
    hd = D // n_head
    h = rms(x, sd["attention_norm.weight"], eps)
    qkv = sd["attention.wqkv.weight"] @ h
    q, k, v = qkv[:D].view(n_head, hd), qkv[D:2 * D].view(n_head, hd), qkv[2 * D:].view(n_head, hd)
    q, k = rope_complex(q, pos, grid, base), rope_complex(k, pos, grid, base)
    cache.append((k, v))
    K = torch.stack([c[0] for c in cache])  # [T, H, hd]
    V = torch.stack([c[1] for c in cache])
    att = torch.softmax(torch.einsum("hd,thd->ht", q, K) / math.sqrt(hd), -1)
    o = torch.einsum("ht,thd->hd", att, V).reshape(D)
    x = x + sd["attention.wo.weight"] @ o
    h = rms(x, sd["ffn_norm.weight"], eps)
    a = sd["feed_forward.w1.weight"] @ h
    b = sd["feed_forward.w3.weight"] @ h
    return x + sd["feed_forward.w2.weight"] @ (torch.nn.functional.silu(a) * b)


def main():
    cfg = GPTConfig(dim=64, n_layer=2, n_head=4, block_size=16, num_classes=3, vocab_size=50)
    g = GPT(cfg).eval()
    torch.nn.init.normal_(g.output.weight, 0, 0.05)
    for p in g.parameters():
        if p.dim() == 1:
            torch.nn.init.normal_(p, 1.0, 0.2)
    x = torch.randint(0, 50, (1, 6))
    lab = torch.tensor([2])
    logits, feats = g(lab, x)
    # naive
    caches = [[] for _ in g.layers]
    seq = [g.cls_embedding.embedding_table.weight[2]] + [g.tok_embeddings.weight[t] for t in x[0]]
    ref_logits, ref_feats = [], []
    with torch.no_grad():
        for pos, e in enumerate(seq):
            h = e.clone()
            for li, layer in enumerate(g.layers):
                h = block_step(layer, h, pos, caches[li], cfg.n_head, 4, cfg.rope_base, cfg.norm_eps)
            ref_feats.append(h)
            ref_logits.append(g.output.weight @ rms(h, g.norm.weight, cfg.norm_eps))
    ref_logits = torch.stack(ref_logits)
    err = (ref_logits - logits[0]).abs().max().item()
    assert err < 1e-4, err
    print(f"GPT vs naive reference: max abs err {err:.2e}")

    # null class row
    ln, _ = g(lab, x, force_null=True)
    assert ln.shape == logits.shape

    # draft head: teacher forcing and exact depth-2 drafting vs incremental reference
    head = DraftHead(cfg.dim, HeadConfig(n_head=4)).eval()
    for p in head.parameters():
        if p.dim() == 1:
            torch.nn.init.normal_(p, 1.0, 0.2)
    T = x.shape[1]
    with torch.no_grad():
        la, ga, lb = head_two_step(head, g, x, feats[:, :T])
        lt, _ = head_teacher_forced(head, g, x, feats[:, :T])
        assert (la - lt).abs().max() < 1e-5
        for k in range(2, T + 1):  # depth-2 draft at position k: verified prefix up to k-1
            cache = []
            for j in range(1, k):  # verified positions 1..k-1, teacher-forced features
                inp = head.fc.weight @ torch.cat([g.tok_embeddings.weight[x[0, j - 1]], feats[0, j - 1]])
                gj = block_step(head.layer, inp, j, cache, 4, 4, cfg.rope_base, cfg.norm_eps)
            inp = head.fc.weight @ torch.cat([g.tok_embeddings.weight[x[0, k - 1]], gj])
            gk = block_step(head.layer, inp, k, cache, 4, 4, cfg.rope_base, cfg.norm_eps)
            ref = g.output.weight @ rms(gk, g.norm.weight, cfg.norm_eps)
            e1 = (ref - lb[0, k - 2]).abs().max().item()
            ref1 = g.output.weight @ rms(gj, g.norm.weight, cfg.norm_eps)
            e2 = (ref1 - la[0, k - 2]).abs().max().item()
            assert e1 < 1e-4 and e2 < 1e-4, (k, e1, e2)
    print("draft head depth-1 / depth-2 vs incremental reference: OK")

    # FSQ codebook consistency
    fsq = FSQ()
    z = torch.randn(3, 4, 8, 8) * 3
    zq, idx = fsq(z)
    cb = fsq.codebook()
    assert torch.equal(cb[idx].permute(0, 3, 1, 2), zq)
    assert cb.shape == (1000, 4) and len(torch.unique(cb, dim=0)) == 1000
    print("FSQ explicit codebook: OK")

    # tensor names
    big = GPT(GPTConfig())
    names = set(big.state_dict())
    exp = {"tok_embeddings.weight", "cls_embedding.embedding_table.weight", "norm.weight", "output.weight"}
    for i in range(6):
        exp |= {f"layers.{i}.attention.wqkv.weight", f"layers.{i}.attention.wo.weight",
                f"layers.{i}.feed_forward.w1.weight", f"layers.{i}.feed_forward.w2.weight",
                f"layers.{i}.feed_forward.w3.weight", f"layers.{i}.attention_norm.weight",
                f"layers.{i}.ffn_norm.weight"}
    assert names == exp, names ^ exp
    assert big.state_dict()["layers.0.feed_forward.w1.weight"].shape == (688, 256)
    assert big.state_dict()["cls_embedding.embedding_table.weight"].shape == (11, 256)
    hn = set(DraftHead(256, HeadConfig()).state_dict())
    assert hn == {"fc.weight", "layer.attention.wqkv.weight", "layer.attention.wo.weight",
                  "layer.feed_forward.w1.weight", "layer.feed_forward.w2.weight",
                  "layer.feed_forward.w3.weight", "layer.attention_norm.weight",
                  "layer.ffn_norm.weight"}, hn
    dec = Tokenizer(VQConfig()).decoder
    print("decoder tensors:", len(dec.state_dict()), "e.g.",
          [k for k in dec.state_dict() if "upsample" in k or "nin" in k][:6])
    out = dec(torch.randn(1, 64, 8, 8))
    assert out.shape == (1, 3, 32, 32)
    print("OK")


if __name__ == "__main__":
    main()
