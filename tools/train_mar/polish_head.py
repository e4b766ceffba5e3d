"""Step 2b: polish the trained target's DiffLoss head at the sampler's first timestep.

Why: MAR's sampler starts at t = 999 of the 1000-step cosine schedule, whose last beta is clipped
at 0.999, so ᾱ_999 = 2.4e-9 and the first step turns an epsilon error e into an error of about
317 e in μ_99 (weights/demo-mar/README.md, "Why"). The ideal epsilon there is x_t to within
5e-5, an easy function, but uniform-timestep training gives it 1/1000 of the loss and leaves an
error of about 0.04: the chain never recovers and every token comes out hundreds of times too
large. This step trains the head only, with the transformer frozen: half of each batch at
t = 999 with its loss weighted `--first-weight`, the other half at uniform timesteps so the
rest of the schedule stays fitted, the learning rate cosine-annealed to zero.

The head sees the frozen target's own conditions z: a bank of (z, token) pairs computed once
from training images under MAR's training masks, with a `--label-drop` share of the rows
conditioned on `fake_latent` (the guidance's unconditional branch needs the same precision).
Before and after, it logs the epsilon error at t = 999 on validation conditions (conditional,
unconditional, and guided at scale 3, which is what the sampler uses) and the ordinary
diffusion loss, so a polish that costs the rest of the schedule would show.

Rewrites the head tensors of the checkpoint's EMA weights (the exported ones) in place and keeps
the unpolished checkpoint as <name>_unpolished.pt. Writes out/<name>_polish.log and
out/<name>_polish_metrics.json.

usage: python polish_head.py [--ckpt out/target.pt] [--budget-s 180] [--max-steps N]
"""
import json
import math
import os
import shutil
import time

import numpy as np
import torch

from models import OUT, DiffusionLoss, conditions, masked_step, training_args
from common import TimeCosine, log, setup
from train_mar import load_frozen, scaled_tokens

FIRST_T = 999  # the respaced sampler's first timestep (timestep_map[99])


def condition_bank(model, lat, split, scale, n_img, label_drop, rng, bs=64):
    """(z, x0) pairs of the masked positions of n_img images of `split` under MAR training masks:
    z [n, D] from the frozen `model`, x0 [n, C] their scaled tokens, uncond [n] True where the
    row was conditioned on fake_latent."""
    zs, xs, us = [], [], []
    with torch.no_grad():
        for i in range(0, n_img, bs):
            idx = np.arange(i, min(i + bs, n_img))
            tok = scaled_tokens(lat[f"{split}_mean"], lat[f"{split}_std"], idx, scale, rng)
            mask, drop = masked_step(*tok.shape[:2], rng, label_drop)
            z = conditions(model, tok, torch.from_numpy(lat[f"{split}_y"][idx]), mask, drop)
            sel = mask.bool()
            zs.append(z[sel])
            xs.append(tok[sel])
            us.append(drop.expand_as(mask)[sel].bool())
    return torch.cat(zs), torch.cat(xs), torch.cat(us)


def first_step_errors(net, diff_loss, bank, n=4096, cfg=3.0, seed=7):
    """RMS epsilon error at t = 999 over n rows of a validation bank: conditional, unconditional
    and guided (uncond + cfg (cond - uncond), both on the same x_t) errors."""
    z, x0, unc = bank
    g = torch.Generator().manual_seed(seed)
    zc = z[~unc][torch.randint(0, int((~unc).sum()), (n,), generator=g)]
    zu = z[unc][torch.randint(0, int(unc.sum()), (n,), generator=g)]
    x = x0[torch.randint(0, len(x0), (n,), generator=g)]
    t, eps, xt = diff_loss.noised(x, torch.full((n,), FIRST_T), torch.randn(n, x.shape[1], generator=g))
    with torch.no_grad():
        ec, eu = net(xt, t.float(), zc)[:, :x.shape[1]], net(xt, t.float(), zu)[:, :x.shape[1]]
    rms = lambda e: ((e - eps) ** 2).mean().sqrt().item()  # noqa: E731
    return {"cond": rms(ec), "uncond": rms(eu), "guided": rms(eu + cfg * (ec - eu))}


def bank_loss(net, diff_loss, bank, n=16384, seed=8):
    """Mean diffusion loss (uniform timesteps, fixed seed) over n rows of a bank."""
    z, x0, _ = bank
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    idx = torch.randint(0, len(x0), (n,))
    with torch.no_grad():
        loss = diff_loss(net, x0[idx], z[idx]).mean().item()
    torch.set_rng_state(state)
    return loss


def main():
    ap = training_args(180, 1e-3)
    ap.set_defaults(bs=512)
    ap.add_argument("--ckpt", default=os.path.join(OUT, "target.pt"))
    ap.add_argument("--bank-images", type=int, default=2048, help="training images in the condition bank")
    ap.add_argument("--label-drop", type=float, default=0.3)
    ap.add_argument("--first-share", type=float, default=0.5, help="share of each batch at t = 999")
    ap.add_argument("--first-weight", type=float, default=100.0, help="loss weight of the t = 999 rows")
    a = ap.parse_args()
    setup(2, a.threads)
    name = os.path.splitext(os.path.basename(a.ckpt))[0]
    lf = open(os.path.join(OUT, f"{name}_polish.log"), "a")
    t_start = time.time()
    lat = dict(np.load(os.path.join(OUT, "latents.npz")))
    scale = torch.load(os.path.join(OUT, "vae.pt"))["scale_factor"]
    ckpt = torch.load(a.ckpt)
    model = load_frozen(a.ckpt)
    net = model.diffloss.net
    diff_loss = DiffusionLoss(ckpt["cfg"]["diffusion_steps"])
    rng = np.random.RandomState(20)
    train = condition_bank(model, lat, "train", scale, a.bank_images, a.label_drop, rng)
    val = condition_bank(model, lat, "val", scale, 512, 0.5, np.random.RandomState(21))
    before = {"first_step_eps_rms": first_step_errors(net, diff_loss, val), "val_loss": bank_loss(net, diff_loss, val)}
    log(lf, f"{a.ckpt}: bank of {len(train[0])} conditions from {a.bank_images} images in {time.time() - t_start:.0f}s; "
            f"before: {before}")

    net.train().requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = TimeCosine(opt, a.lr, a.budget_s, warmup=20, floor=0.0)
    n_first = int(a.bs * a.first_share)
    weight = torch.ones(a.bs)
    weight[:n_first] = a.first_weight
    z_all, x_all, _ = train
    it, t0 = 0, time.time()
    while it < a.max_steps and not sched.done():
        sched.step(it)
        idx = torch.randint(0, len(x_all), (a.bs,))
        x0, z = x_all[idx], z_all[idx]
        t = torch.randint(0, diff_loss.steps, (a.bs,))
        t[:n_first] = FIRST_T
        t, noise, xt = diff_loss.noised(x0, t)
        loss = (diff_loss.terms(net(xt, t.float(), z), x0, xt, t, noise) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 3.0)
        opt.step()
        it += 1
        if it % 500 == 0:
            log(lf, f"step {it} loss {loss.item():.4f} first-step guided eps rms "
                    f"{first_step_errors(net, diff_loss, val)['guided']:.5f} {time.time() - t0:.0f}s")
    net.eval().requires_grad_(False)
    after = {"first_step_eps_rms": first_step_errors(net, diff_loss, val), "val_loss": bank_loss(net, diff_loss, val)}
    log(lf, f"done: {it} steps in {time.time() - t0:.0f}s; after: {after}")

    stem = os.path.splitext(a.ckpt)[0]
    shutil.copyfile(a.ckpt, f"{stem}_unpolished.pt")
    for k, v in model.state_dict().items():
        if k.startswith("diffloss."):
            ckpt["model_ema"][k] = v.clone()
    torch.save(ckpt, a.ckpt)
    with open(os.path.join(OUT, f"{name}_polish_metrics.json"), "w") as f:
        json.dump({"steps": it, "train_s": round(time.time() - t0), "total_s": round(time.time() - t_start),
                   "bank_rows": len(x_all), "before": before, "after": after}, f, indent=1)


if __name__ == "__main__":
    main()
