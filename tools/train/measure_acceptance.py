"""Step 7: measure speculative acceptance with the exported weights (reloaded float16 -> float32).

Per-position vanilla acceptance of a drafter q against the target p is
    alpha = E_x[ sum_v min(p(v | x_<k), q(v | x_<k)) ]
(the probability that the speculative-sampling test accepts the drafted token at that position).
x is sampled from the target itself at temperature 1 (the distribution the engine sees when it
generates), with and without CFG; with CFG both p and q are CFG-mixed with the same scale
(q: the draft model / head runs its own cond and null branches).  Also reported on real
validation images (teacher forcing, no CFG) and greedy agreement (argmax p == argmax q).

Drafters: the draft AR model; the draft head at draft depth 1 (teacher-forced target feature
f_{k-1}) and depth 2 (its own g_{k-1}; exact KV context, see models.head_two_step).
Positions: the draft model is averaged over image tokens x_1..x_63, the head over x_1..x_63
(depth 1) and x_2..x_63 (depth 2); x_0 always comes from the target's prefill.

Writes out/acceptance.json and out/samples_*.png (target / draft-only sample grids).

usage: python measure_acceptance.py [--weights ../../weights/demo] [--n 100]
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image

from common import HERE, OUT, setup
from demo_io import load_demo
from models import head_two_step


def mix(lc, ln, cfg):
    return lc if cfg is None else ln + (lc - ln) * cfg


@torch.no_grad()
def sample(gpt, labels, cfg=None, temperature=1.0, gen=None):
    B = len(labels)
    x = torch.zeros(B, 0, dtype=torch.long)
    for i in range(gpt.cfg.block_size):
        if cfg is None:
            lg, _ = gpt(labels, x)
            lg = lg[:, -1]
        else:
            lg, _ = gpt(labels, x)
            lg_n, _ = gpt(labels, x, force_null=True)
            lg = mix(lg[:, -1], lg_n[:, -1], cfg)
        p = torch.softmax(lg / temperature, -1)
        nxt = torch.multinomial(p, 1, generator=gen)
        x = torch.cat([x, nxt], 1)
    return x


@torch.no_grad()
def dists(m, seq, labels, cfg, T=1.0):
    """Returns dict name -> probs [B, 64, V] aligned so index k predicts x_k (NaN-free, full)."""
    gpt, draft, head = m["gpt"], m["draft"], m["draft_head"]
    inp = seq[:, :-1]
    out = {}
    lc, fc = gpt(labels, inp)
    ln, fn = gpt(labels, inp, force_null=True)
    out["target"] = torch.softmax(mix(lc, ln if cfg else None, cfg) / T, -1)
    dc, _ = draft(labels, inp)
    dn, _ = draft(labels, inp, force_null=True)
    out["draft"] = torch.softmax(mix(dc, dn if cfg else None, cfg) / T, -1)
    ac, _, bc = head_two_step(head, gpt, inp, fc[:, :-1])   # A: predicts x_1..x_63, B: x_2..x_63
    an, _, bn = head_two_step(head, gpt, inp, fn[:, :-1])
    out["head_d1"] = torch.softmax(mix(ac, an if cfg else None, cfg) / T, -1)
    out["head_d2"] = torch.softmax(mix(bc, bn if cfg else None, cfg) / T, -1)
    return out


def accept(p, q):
    return torch.minimum(p, q).sum(-1)  # [B, positions]


def report(m, seq, labels, cfg):
    d = dists(m, seq, labels, cfg)
    p = d["target"]
    res = {}
    res["draft"] = (accept(p[:, 1:], d["draft"][:, 1:]),
                    (p[:, 1:].argmax(-1) == d["draft"][:, 1:].argmax(-1)).float())
    res["head_depth1"] = (accept(p[:, 1:], d["head_d1"]),
                          (p[:, 1:].argmax(-1) == d["head_d1"].argmax(-1)).float())
    res["head_depth2"] = (accept(p[:, 2:], d["head_d2"]),
                          (p[:, 2:].argmax(-1) == d["head_d2"].argmax(-1)).float())
    return {k: {"alpha_T1": round(a.mean().item(), 4), "greedy_agree": round(g.mean().item(), 4)}
            for k, (a, g) in res.items()}


def save_grid(vq, seq, path, ncol=10):
    with torch.no_grad():
        img = vq.decode_tokens(seq.reshape(-1, 8, 8))
    u8 = torch.clamp(127.5 * img + 128, 0, 255).to(torch.uint8)[:, 0].numpy()  # gray: channel 0
    n = len(u8)
    rows = (n + ncol - 1) // ncol
    grid = np.zeros((rows * 34, ncol * 34), np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[r * 34 + 1:r * 34 + 33, c * 34 + 1:c * 34 + 33] = u8[i]
    Image.fromarray(grid).resize((ncol * 34 * 2, rows * 34 * 2), Image.NEAREST).save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=os.path.normpath(os.path.join(HERE, "..", "..", "weights", "demo")))
    ap.add_argument("--n", type=int, default=100, help="samples (n/10 per class)")
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--cfg-scale", type=float, default=2.0)
    ap.add_argument("--tokens", default=os.path.join(OUT, "tokens.npz"))
    ap.add_argument("--out", default=os.path.join(OUT, "acceptance.json"))
    a = ap.parse_args()
    setup(5)
    m = load_demo(a.weights)
    labels = torch.arange(a.n) % 10
    labels = labels.sort().values
    gen = torch.Generator().manual_seed(1234)
    result = {"n_samples": a.n, "temperature": 1.0}
    t0 = time.time()
    seq = sample(m["gpt"], labels, None, gen=gen)
    result["target_samples_no_cfg"] = report(m, seq, labels, None)
    print("no cfg", result["target_samples_no_cfg"], f"{time.time() - t0:.0f}s", flush=True)
    save_grid(m["vq"], seq, os.path.join(OUT, "samples_target.png"))
    seq_c = sample(m["gpt"], labels, a.cfg_scale, gen=gen)
    result[f"target_samples_cfg{a.cfg_scale}"] = report(m, seq_c, labels, a.cfg_scale)
    print("cfg", result[f"target_samples_cfg{a.cfg_scale}"], f"{time.time() - t0:.0f}s", flush=True)
    save_grid(m["vq"], seq_c, os.path.join(OUT, "samples_target_cfg.png"))
    seq_d = sample(m["draft"], labels, a.cfg_scale, gen=gen)
    save_grid(m["vq"], seq_d, os.path.join(OUT, "samples_draft_cfg.png"))
    d = np.load(a.tokens)
    vt = torch.from_numpy(d["val_tok"][:a.n_val].astype(np.int64))
    vy = torch.from_numpy(d["val_y"][:a.n_val])
    result["val_images_no_cfg"] = report(m, vt, vy, None)
    print("val", result["val_images_no_cfg"], flush=True)
    result["measure_s"] = time.time() - t0
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
