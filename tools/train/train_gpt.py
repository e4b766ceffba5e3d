"""Step 4: train a class-conditional LlamaGen GPT on the token grids (target or draft).

  python train_gpt.py --model target   # dim 256, 6 layers, 8 heads -> out/target.pt
  python train_gpt.py --model draft    # dim 128, 2 layers, 4 heads -> out/draft.pt

Sequence [class, x_0..x_62] -> predicts x_0..x_63 (cross-entropy, mean over the 64 tokens).
Class dropout 10% (label -> null row num_classes).  Validation NLL (nats per image token, true
class) on a fixed val subset every --eval-every steps; the best state is kept and training stops
after --patience evaluations without improvement, or when the wall-clock budget is used.
At the end the best state is evaluated on the full val split and on the test split.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import OUT, EpochBatches, TimeCosine, log, setup
from models import GPT, GPTConfig

CONFIGS = {
    "target": dict(dim=256, n_layer=6, n_head=8),
    "draft": dict(dim=128, n_layer=2, n_head=4),
}


@torch.no_grad()
def eval_nll(model, toks, ys, bs=250, null=False):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(toks), bs):
        t = torch.from_numpy(toks[i:i + bs].astype(np.int64))
        y = torch.from_numpy(ys[i:i + bs])
        logits, _ = model(y, t[:, :-1], force_null=null)
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1),
                               reduction="sum").item()
        n += t.numel()
    model.train()
    return tot / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=list(CONFIGS), required=True)
    ap.add_argument("--budget-s", type=float, default=1200)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--dropout", type=float, default=0.0,
                    help="token/resid/ffn dropout (official default 0.1; ~1 epoch here, so 0)")
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--n-val-eval", type=int, default=1500)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--tokens", default=os.path.join(OUT, "tokens.npz"))
    ap.add_argument("--init-from", default=None,
                    help="continue from a checkpoint written by this script (new optimizer/schedule)")
    ap.add_argument("--warmup", type=int, default=100)
    a = ap.parse_args()
    setup(0 if a.model == "target" else 1)
    out = a.out or os.path.join(OUT, f"{a.model}.pt")
    lf = open(out[:-3] + ".log", "a")
    d = np.load(a.tokens)
    ttok, ty = d["train_tok"], d["train_y"]
    vtok, vy = d["val_tok"], d["val_y"]
    cfg = GPTConfig(**CONFIGS[a.model], token_dropout_p=a.dropout, resid_dropout_p=a.dropout,
                    ffn_dropout_p=a.dropout)
    model = GPT(cfg)
    prev = None
    if a.init_from:
        prev = torch.load(a.init_from, map_location="cpu")
        model.load_state_dict(prev["state"])
    nparam = sum(p.numel() for p in model.parameters())
    log(lf, f"{a.model}: {cfg} ffn_hidden {cfg.ffn_hidden()} params {nparam}; args {vars(a)}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    sched = TimeCosine(opt, a.lr, a.budget_s, warmup=a.warmup, floor=0.05)
    rng = np.random.RandomState(2)
    batches, it, t0 = EpochBatches(len(ttok), a.bs, rng), 0, time.time()
    best, best_state, best_it, bad, run = float("inf"), None, 0, 0, None
    epochs, history, prev_s = 0.0, [], 0.0
    if prev is not None:
        best = eval_nll(model, vtok[:a.n_val_eval], vy[:a.n_val_eval])
        best_state = {k: x.detach().clone() for k, x in model.state_dict().items()}
        epochs, prev_s = prev["metrics"]["epochs"], prev["metrics"]["train_s"]
        history = [("previous run", prev["metrics"]["history"])]
        batches.pos = (prev["metrics"]["steps"] * prev["metrics"]["batch"]) % len(ttok)  # continue the epoch
        log(lf, f"continuing from {a.init_from}: val nll {best:.4f}, {epochs:.2f} epochs, {prev_s:.0f}s")
    while it < a.max_steps and not sched.done():
        b = batches.next()
        t = torch.from_numpy(ttok[b].astype(np.int64))
        y = torch.from_numpy(ty[b])
        lr = sched.step(it)
        logits, _ = model(y, t[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        it += 1
        epochs += a.bs / len(ttok)
        if it % 25 == 0:
            log(lf, f"step {it} ep {epochs:.2f} lr {lr:.2e} train nll {run:.4f} {time.time() - t0:.0f}s")
        if it % a.eval_every == 0 or sched.done() or it >= a.max_steps:
            v = eval_nll(model, vtok[:a.n_val_eval], vy[:a.n_val_eval])
            history.append((it, round(run, 4), round(v, 4)))
            if v < best - 1e-4:
                best, best_it, bad = v, it, 0
                best_state = {k: x.detach().clone() for k, x in model.state_dict().items()}
                tag = "best"
            else:
                bad += 1
                tag = f"no improvement ({bad}/{a.patience})"
            log(lf, f"step {it} val nll {v:.4f} nats/token ({v / math.log(2):.3f} bits) {tag}")
            if bad >= a.patience:
                log(lf, "early stop")
                break
    train_s = time.time() - t0 + prev_s
    model.load_state_dict(best_state)
    v_full = eval_nll(model, vtok, vy)
    v_null = eval_nll(model, vtok, vy, null=True)
    te = eval_nll(model, d["test_tok"][:5000], d["test_y"][:5000])
    tr = eval_nll(model, ttok[:2000], ty[:2000])
    m = {"model": a.model, "params": nparam, "steps": it, "best_step": best_it, "epochs": epochs,
         "train_s": train_s, "batch": a.bs, "lr": a.lr,
         "val_nll_nats": v_full, "val_nll_bits": v_full / math.log(2),
         "val_nll_null_class_nats": v_null, "test5k_nll_nats": te,
         "train2k_nll_nats": tr, "history": history}
    log(lf, f"done {json.dumps({k: v for k, v in m.items() if k != 'history'})}")
    torch.save({"cfg": cfg.__dict__, "state": best_state, "metrics": m}, out)
    with open(out[:-3] + "_metrics.json", "w") as f:
        json.dump(m, f, indent=1)


if __name__ == "__main__":
    main()
