"""Step 2: train the MAR target or the MAR draft on the latents of step 1.

Writes out/{target,draft}.pt (raw weights and EMA weights, float32), out/{target,draft}.log and
out/{target,draft}_metrics.json.

Each step: a batch of images, their tokens sampled from the cached posterior (mean + std * noise)
and multiplied by the scale factor, MAR's masked training (models.mar_loss), AdamW, gradient
clipping at 3 (as MAR), an EMA of the weights (decay ramped as (1 + n) / (10 + n), capped at
--ema). Validation: the same loss on a fixed 1,000-image validation batch set with fixed noise.
The checkpoint is also written at every validation, so a later script can use a run in progress.

--distill-from trains the draft by knowledge distillation from a trained, frozen target
(models.distill_loss: the draft's head outputs, epsilon and the learned variance, matched to the
target's on the same masked inputs, labels, timesteps and noise). --init-matching starts a model
from every tensor of a checkpoint's EMA weights whose name and shape match (the shipped draft,
at the target's width and with its head size, takes the target's embeddings, its first encoder
and decoder blocks and the whole head); --freeze-head then trains the transformer only.

usage: python train_mar.py --model target|draft [--budget-s S] [--max-steps N] [--bs 64] [--lr 1e-3]
       python train_mar.py --model target --init-from out/target.pt --out out/target_b.pt --lr 5e-4 --warmup 20
       python train_mar.py --model draft --distill-from out/target.pt --init-matching out/target.pt --freeze-head
"""
import copy
import json
import os
import time

import numpy as np
import torch

from models import (OUT, DiffusionLoss, distill_loss, init_mar, mar_loss, mar_section, n_params, tokens_of,
                    training_args)
from common import EpochBatches, TimeCosine, log, setup
import mar_torch


def scaled_tokens(mean, std, idx, scale, rng):
    """Posterior samples of the images idx as scaled [n, 64, 16] tokens."""
    m, s = mean[idx].astype(np.float32), std[idx].astype(np.float32)
    return tokens_of(torch.from_numpy((m + s * rng.randn(*m.shape).astype(np.float32)) * scale))


def validate(model, diff_loss, lat, scale, teacher=None, n=1000, bs=250):
    """Mean validation loss over n images with fixed masks, noise and timesteps (seeded): the
    diffusion loss, or with a `teacher` the distillation loss (class dropout 0.1 included, as
    the guidance's unconditional branch is drafted too)."""
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(123)
    rng, total = np.random.RandomState(123), 0.0
    with torch.no_grad():
        for i in range(0, n, bs):
            idx = np.arange(i, i + bs)
            tok = scaled_tokens(lat["val_mean"], lat["val_std"], idx, scale, rng)
            y = torch.from_numpy(lat["val_y"][idx])
            if teacher is None:
                total += mar_loss(model, diff_loss, tok, y, rng, label_drop=0.0).item()
            else:
                total += distill_loss(model, teacher, diff_loss, tok, y, rng).item()
    torch.set_rng_state(state)
    model.train()
    return total / (n // bs)


def load_frozen(path):
    """The EMA weights (the exported ones) of the checkpoint `path` as a frozen model in eval mode."""
    ckpt = torch.load(path)
    model = mar_torch.MAR(ckpt["cfg"])
    model.load_state_dict(ckpt["model_ema"])
    model.eval().requires_grad_(False)
    return model


def main():
    ap = training_args(1200, 1e-3)
    ap.add_argument("--model", choices=["target", "draft"], required=True)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--init-from", help="continue from this checkpoint (its raw and EMA weights; new optimizer and schedule)")
    ap.add_argument("--out", help="checkpoint to write (default out/MODEL.pt)")
    ap.add_argument("--distill-from", help="distil from this target checkpoint (its EMA weights, frozen)")
    ap.add_argument("--data-weight", type=float, default=0.0,
                    help="with --distill-from: weight of the ordinary diffusion loss added to the distillation loss")
    ap.add_argument("--label-drop", type=float, default=0.1, help="class dropout to fake_latent")
    ap.add_argument("--init-matching", help="start from the EMA tensors of this checkpoint whose name and shape match")
    ap.add_argument("--freeze-head", action="store_true",
                    help="train the transformer only (a draft that keeps the target's head from --init-matching)")
    a = ap.parse_args()
    out = a.out or os.path.join(OUT, f"{a.model}.pt")
    name = os.path.splitext(os.path.basename(out))[0]
    setup(0 if a.model == "target" else 1, a.threads)
    lf = open(os.path.join(OUT, f"{name}.log"), "a")
    lat = dict(np.load(os.path.join(OUT, "latents.npz")))
    scale = torch.load(os.path.join(OUT, "vae.pt"))["scale_factor"]
    cfg = mar_section(a.model)
    model = mar_torch.MAR(cfg)
    init_mar(model)
    ema = copy.deepcopy(model)
    if a.init_from:
        start = torch.load(a.init_from)
        model.load_state_dict(start["model"])
        ema.load_state_dict(start["model_ema"])
    if a.init_matching:
        src = torch.load(a.init_matching)["model_ema"]
        own = model.state_dict()
        copied = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(copied, strict=False)
        ema.load_state_dict(copied, strict=False)
        log(lf, f"init from {a.init_matching}: {len(copied)} of {len(own)} tensors, "
                  f"{sum(v.numel() for v in copied.values())} of {n_params(model)} params")
    teacher = load_frozen(a.distill_from) if a.distill_from else None
    diff_loss = DiffusionLoss(cfg["diffusion_steps"])
    log(lf, f"{a.model} {cfg}; {n_params(model)} params (head {n_params(model.diffloss)}); scale {scale:.4f}; from {a.init_from or a.init_matching or 'scratch'}"
            + (f"; distilled from {a.distill_from} (data weight {a.data_weight})" if teacher else ""))
    if a.freeze_head:
        model.diffloss.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, betas=(0.9, 0.95), weight_decay=0.02)
    sched = TimeCosine(opt, a.lr, a.budget_s, warmup=a.warmup, floor=0.05)
    rng = np.random.RandomState(10 + (a.model == "draft"))
    batches, it, t0, run, evals = EpochBatches(len(lat["train_y"]), a.bs, rng), 0, time.time(), None, []
    while it < a.max_steps and not sched.done():
        idx = batches.next()
        tok = scaled_tokens(lat["train_mean"], lat["train_std"], idx, scale, rng)
        lr = sched.step(it)
        y = torch.from_numpy(lat["train_y"][idx])
        if teacher is None:
            loss = mar_loss(model, diff_loss, tok, y, rng, label_drop=a.label_drop)
        else:
            loss = distill_loss(model, teacher, diff_loss, tok, y, rng, a.label_drop, data_weight=a.data_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 3.0)
        opt.step()
        decay = a.ema if a.init_from else min(a.ema, (1 + it) / (10 + it))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        it += 1
        if it % 25 == 0:
            log(lf, f"step {it} lr {lr:.2e} loss {run:.4f} {time.time() - t0:.0f}s")
        if it % a.eval_every == 0:
            evals.append((it, validate(ema, diff_loss, lat, scale, teacher)))
            log(lf, f"step {it} val {'distillation ' if teacher else ''}loss (EMA) {evals[-1][1]:.4f}")
            torch.save({"model": model.state_dict(), "model_ema": ema.state_dict(), "cfg": cfg}, out)
    train_s = time.time() - t0
    final = {"raw": validate(model, diff_loss, lat, scale), "ema": validate(ema, diff_loss, lat, scale)}
    if teacher is not None:
        final["distill_ema"] = validate(ema, diff_loss, lat, scale, teacher)
    log(lf, f"done: {it} steps ({it * a.bs / len(lat['train_y']):.2f} epochs) in {train_s:.0f}s; "
            f"val loss raw {final['raw']:.4f}, EMA {final['ema']:.4f}"
            + (f"; val distillation loss (EMA) {final['distill_ema']:.5f}" if teacher else ""))
    torch.save({"model": model.state_dict(), "model_ema": ema.state_dict(), "cfg": cfg}, out)
    with open(os.path.join(OUT, f"{name}_metrics.json"), "w") as f:
        json.dump({"params": n_params(model), "steps": it, "epochs": round(it * a.bs / len(lat["train_y"]), 2),
                   "train_s": round(train_s), "last_train_loss": round(run, 4), "val_loss_raw": round(final["raw"], 4),
                   "val_loss_ema": round(final["ema"], 4),
                   "val_distill_ema": final.get("distill_ema"), "evals": evals}, f, indent=1)


if __name__ == "__main__":
    main()
