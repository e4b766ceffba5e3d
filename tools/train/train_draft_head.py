"""Step 5: train the EAGLE/LANTERN-style draft head against the frozen target.

Per batch the frozen target runs once on [class, x_0..x_62] (class dropped to null 10% of the
time, so the head also serves the CFG null branch) and yields pre-norm features f_0..f_63.
The head runs over positions k = 1..63 with s_k = x_{k-1} and teacher-forced f_{k-1}
(pass A) and, for k = 2..63, a second exact draft step fed with its own g_{k-1} (pass B,
see models.head_two_step).  Loss:
    CE(A logits, x_1..x_63) + w2 * CE(B logits, x_2..x_63) + wf * SmoothL1(g_A, f_1..f_63)
Logits = target.output(target.norm(g)) with the target's (frozen) norm/output.

Init (--init copy, default): the head's decoder layer starts as a copy of the target's last layer
and fc as [0 | I] (feature passed through); --init random uses N(0, 0.02).

usage: python train_draft_head.py [--budget-s 300]
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
from models import GPT, GPTConfig, DraftHead, HeadConfig, head_two_step


def load_gpt(path):
    ck = torch.load(path, map_location="cpu")
    cfg = GPTConfig(**ck["cfg"])
    m = GPT(cfg)
    m.load_state_dict(ck["state"])
    m.eval()
    return m


@torch.no_grad()
def eval_head(head, target, toks, ys, bs=250):
    head.eval()
    ce_a = ce_b = acc_a = 0.0
    n_a = n_b = 0
    for i in range(0, len(toks), bs):
        t = torch.from_numpy(toks[i:i + bs].astype(np.int64))
        y = torch.from_numpy(ys[i:i + bs])
        _, f = target(y, t[:, :-1])
        la, _, lb = head_two_step(head, target, t[:, :-1], f[:, :-1])
        ce_a += F.cross_entropy(la.reshape(-1, la.shape[-1]), t[:, 1:].reshape(-1), reduction="sum").item()
        ce_b += F.cross_entropy(lb.reshape(-1, lb.shape[-1]), t[:, 2:].reshape(-1), reduction="sum").item()
        n_a += t[:, 1:].numel()
        n_b += t[:, 2:].numel()
    head.train()
    return ce_a / n_a, ce_b / n_b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-s", type=float, default=300)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--w2", type=float, default=0.5)
    ap.add_argument("--wf", type=float, default=0.1)
    ap.add_argument("--init", choices=["copy", "random"], default="copy")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--n-val-eval", type=int, default=1000)
    ap.add_argument("--tokens", default=os.path.join(OUT, "tokens.npz"))
    ap.add_argument("--target", default=os.path.join(OUT, "target.pt"))
    ap.add_argument("--out", default=os.path.join(OUT, "draft_head.pt"))
    a = ap.parse_args()
    setup(3)
    lf = open(a.out[:-3] + ".log", "a")
    d = np.load(a.tokens)
    ttok, ty, vtok, vy = d["train_tok"], d["train_y"], d["val_tok"], d["val_y"]
    target = load_gpt(a.target)
    for p in target.parameters():
        p.requires_grad_(False)
    dim = target.cfg.dim
    hcfg = HeadConfig()
    head = DraftHead(dim, hcfg)
    if a.init == "copy":
        head.layer.load_state_dict(target.layers[-1].state_dict())
        with torch.no_grad():
            head.fc.weight.zero_()
            head.fc.weight[:, dim:] = torch.eye(dim)
    nparam = sum(p.numel() for p in head.parameters())
    log(lf, f"draft head: {hcfg} dim {dim} params {nparam}; args {vars(a)}")
    opt = torch.optim.AdamW(head.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = TimeCosine(opt, a.lr, a.budget_s, warmup=30, floor=0.05)
    rng = np.random.RandomState(4)
    batches, it, t0 = EpochBatches(len(ttok), a.bs, rng), 0, time.time()
    run = None
    va, vb = eval_head(head, target, vtok[:a.n_val_eval], vy[:a.n_val_eval])
    log(lf, f"step 0 val CE step1 {va:.4f} step2 {vb:.4f}")
    best, best_state = va, {k: x.clone() for k, x in head.state_dict().items()}
    history = [(0, None, round(va, 4), round(vb, 4))]
    while it < a.max_steps and not sched.done():
        b = batches.next()
        t = torch.from_numpy(ttok[b].astype(np.int64))
        y = torch.from_numpy(ty[b])
        y = torch.where(torch.rand(len(b)) < 0.1, torch.full_like(y, target.cfg.num_classes), y)
        with torch.no_grad():
            _, f = target(y, t[:, :-1])  # f: [B, 64, dim], positions 0..63
        lr = sched.step(it)
        la, ga, lb = head_two_step(head, target, t[:, :-1], f[:, :-1])
        loss_a = F.cross_entropy(la.reshape(-1, la.shape[-1]), t[:, 1:].reshape(-1))
        loss_b = F.cross_entropy(lb.reshape(-1, lb.shape[-1]), t[:, 2:].reshape(-1))
        loss_f = F.smooth_l1_loss(ga, f[:, 1:])
        loss = loss_a + a.w2 * loss_b + a.wf * loss_f
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
        cur = np.array([loss_a.item(), loss_b.item(), loss_f.item()])
        run = cur if run is None else 0.95 * run + 0.05 * cur
        it += 1
        if it % 20 == 0:
            log(lf, f"step {it} lr {lr:.2e} CE step1 {run[0]:.4f} step2 {run[1]:.4f} feat {run[2]:.4f} "
                    f"{time.time() - t0:.0f}s")
        if it % a.eval_every == 0 or sched.done() or it >= a.max_steps:
            va, vb = eval_head(head, target, vtok[:a.n_val_eval], vy[:a.n_val_eval])
            history.append((it, round(float(run[0]), 4), round(va, 4), round(vb, 4)))
            tag = ""
            if va < best:
                best, tag = va, "best"
                best_state = {k: x.clone() for k, x in head.state_dict().items()}
            log(lf, f"step {it} val CE step1 {va:.4f} step2 {vb:.4f} {tag}")
    train_s = time.time() - t0
    head.load_state_dict(best_state)
    va, vb = eval_head(head, target, vtok, vy)
    m = {"params": nparam, "steps": it, "train_s": train_s, "batch": a.bs, "lr": a.lr,
         "init": a.init, "w2": a.w2, "wf": a.wf,
         "val_ce_step1_nats": va, "val_ce_step2_nats": vb, "history": history}
    log(lf, f"done {json.dumps({k: v for k, v in m.items() if k != 'history'})}")
    torch.save({"cfg": hcfg.__dict__, "dim": dim, "state": best_state, "metrics": m}, a.out)
    with open(a.out[:-3] + "_metrics.json", "w") as f:
        json.dump(m, f, indent=1)


if __name__ == "__main__":
    main()
