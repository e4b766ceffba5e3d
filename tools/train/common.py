"""Small helpers shared by the training scripts."""
import math
import os
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def setup(seed: int = 0, threads: int = 2):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)


def log(f, msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if f is not None:
        f.write(line + "\n")
        f.flush()


class TimeCosine:
    """Learning rate: linear warm-up over `warmup` steps, then cosine decay to `floor * lr` driven
    by the fraction of the wall-clock budget used (the machine is shared, so a fixed step count
    would either overrun the budget or stop early)."""

    def __init__(self, opt, lr, budget_s, warmup=50, floor=0.1):
        self.opt, self.lr, self.budget, self.warmup, self.floor = opt, lr, budget_s, warmup, floor
        self.t0 = time.time()

    def frac(self):
        return min(1.0, (time.time() - self.t0) / self.budget)

    def step(self, it):
        if it < self.warmup:
            lr = self.lr * (it + 1) / self.warmup
        else:
            c = 0.5 * (1 + math.cos(math.pi * self.frac()))
            lr = self.lr * (self.floor + (1 - self.floor) * c)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def done(self):
        return time.time() - self.t0 >= self.budget


class EpochBatches:
    """Index batches of `bs` over `n` items in a shuffled order, reshuffled with `rng` whenever
    the rest of an epoch cannot fill a batch. `pos` may be set to resume inside an epoch."""

    def __init__(self, n, bs, rng):
        self.n, self.bs, self.rng = n, bs, rng
        self.perm, self.pos = rng.permutation(n), 0

    def next(self):
        if self.pos + self.bs > len(self.perm):
            self.perm, self.pos = self.rng.permutation(self.n), 0
        batch = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return batch
