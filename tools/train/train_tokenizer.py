"""Step 2: train the FSQ tokenizer (encoder + FSQ + LlamaGen-structured decoder) with MSE + L1.

Writes out/tokenizer.pt (encoder + post_quant_conv + decoder, float32) and out/tokenizer.log.

usage: python train_tokenizer.py [--budget-s 600] [--max-steps N] [--bs 64] [--lr 2e-3]
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch

from common import OUT, EpochBatches, TimeCosine, log, setup
from models import Tokenizer, VQConfig
from prep_data import to_model_input


def psnr_of(tok, x_u8, bs=500):
    """Mean PSNR (dB) over images, pixels mapped to [0, 1]; also returns code usage."""
    tok.eval()
    ps, used = [], set()
    with torch.no_grad():
        for i in range(0, len(x_u8), bs):
            x = torch.from_numpy(to_model_input(x_u8[i:i + bs]))
            y, idx = tok(x)
            mse = ((y.clamp(-1, 1) - x) ** 2).mean(dim=(1, 2, 3)) / 4.0
            ps.append((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).numpy())
            used.update(idx.flatten().tolist())
    tok.train()
    return float(np.concatenate(ps).mean()), len(used)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-s", type=float, default=600)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--l1", type=float, default=0.1)
    ap.add_argument("--n-val", type=int, default=2000, help="val images for periodic PSNR")
    ap.add_argument("--out", default=os.path.join(OUT, "tokenizer.pt"))
    a = ap.parse_args()
    setup(0)
    os.makedirs(OUT, exist_ok=True)
    lf = open(os.path.join(OUT, "tokenizer.log"), "a")
    d = np.load(os.path.join(OUT, "data.npz"))
    tx, vx = d["train_x"], d["val_x"]
    cfg = VQConfig()
    tok = Tokenizer(cfg)
    n_dec = sum(p.numel() for p in tok.decoder.parameters())
    n_enc = sum(p.numel() for p in tok.encoder.parameters())
    log(lf, f"tokenizer cfg {cfg}; encoder {n_enc} params, decoder {n_dec} params")
    opt = torch.optim.Adam(tok.parameters(), lr=a.lr, betas=(0.9, 0.99))
    sched = TimeCosine(opt, a.lr, a.budget_s, warmup=50, floor=0.05)
    rng = np.random.RandomState(1)
    batches, it, t0 = EpochBatches(len(tx), a.bs, rng), 0, time.time()
    run = 0.0
    while it < a.max_steps and not sched.done():
        x = torch.from_numpy(to_model_input(tx[batches.next()]))
        lr = sched.step(it)
        y, _ = tok(x)
        mse = ((y - x) ** 2).mean()
        loss = mse + a.l1 * (y - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = mse.item() if it == 0 else 0.98 * run + 0.02 * mse.item()
        it += 1
        if it % 50 == 0:
            p = 10 * math.log10(4.0 / max(run, 1e-10))
            log(lf, f"step {it} lr {lr:.2e} train mse {run:.4f} (~{p:.2f} dB) {time.time() - t0:.0f}s")
        if it % 400 == 0:
            vp, used = psnr_of(tok, vx[:a.n_val])
            log(lf, f"step {it} val PSNR {vp:.2f} dB, codes used {used}")
    train_s = time.time() - t0
    vp, used = psnr_of(tok, vx)
    log(lf, f"done: {it} steps in {train_s:.0f}s; full val PSNR {vp:.2f} dB; codes used on val {used}/1000")
    torch.save({"cfg": cfg.__dict__, "state": tok.state_dict(), "steps": it, "train_s": train_s,
                "val_psnr": vp, "val_codes_used": used}, a.out)
    with open(os.path.join(OUT, "tokenizer_metrics.json"), "w") as f:
        json.dump({"steps": it, "train_s": train_s, "val_psnr_db": vp, "val_codes_used": used,
                   "batch": a.bs, "lr": a.lr, "l1": a.l1}, f, indent=1)


if __name__ == "__main__":
    main()
