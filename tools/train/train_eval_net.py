"""Step 8: the evaluation network of `spire eval` -> weights/demo/eval_net.{json,safetensors},
eval_reference.safetensors and tests/data/eval_net_golden.json.

A small CNN classifies the 32x32 demo images (zero-padded Fashion-MNIST, gray replicated to RGB,
[-1, 1], exactly what the VQ decoder's images become after `x / 127.5 - 1`). Its penultimate
layer (fc1, 64 units, taken before its ReLU so that no unit is dead and the features are closer
to Gaussian) is the feature space of FID and precision/recall, as Inception's pool3 is for
ImageNet.

    conv3x3 3->16, ReLU, maxpool 2   (32 -> 16)
    conv3x3 16->32, ReLU, maxpool 2  (16 -> 8)
    conv3x3 32->64, ReLU, maxpool 2  (8 -> 4)
    flatten (C, H, W order) 1024 -> fc1 64            = features
    ReLU, fc2 64 -> 10                                = logits

Trained on the 55,000-image training split (out/data.npz from prep_data.py) with Adam, light
dropout before fc2, 1 thread (the machine is shared). After training the weights are rounded to
float16 and reloaded, and everything exported is computed from those rounded weights:

- `eval_net.safetensors`: the weights (float16), `eval_net.json`: shapes and the test accuracy;
- `eval_reference.safetensors`: the real-data reference of `spire eval`: training-split feature
  mean / covariance (all 55,000 images, float32), a training feature sample (`train_sample`, the
  real manifold of precision/recall) and a test-split sample with labels (`test_sample`,
  `test_labels`: the "test split" reference row) — so a fresh clone needs no dataset;
- `tests/data/eval_net_golden.json`: pixels, features and logits of a few test images, for the
  Rust forward test.

usage: python train_eval_net.py [--epochs 4] [--sample 2000]
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from common import HERE, OUT, log, setup
from demo_io import save_f16
from prep_data import to_model_input

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CHANNELS = [16, 32, 64]
FEATURE_DIM = 64
NUM_CLASSES = 10


class EvalNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        c = [3] + CHANNELS
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(c[i], c[i + 1], 3, padding=1) for i in range(3))
        self.fc1 = torch.nn.Linear(CHANNELS[-1] * 4 * 4, FEATURE_DIM)
        self.fc2 = torch.nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.fc1(x.flatten(1))

    def logits(self, features):
        return self.fc2(F.dropout(F.relu(features), 0.2, self.training))

    def forward(self, x):
        return self.logits(self.features(x))


def state_names(model):
    """Exported tensor names: conv{1,2,3}.{weight,bias}, fc1.*, fc2.*."""
    out = {}
    for i, conv in enumerate(model.convs):
        out[f"conv{i + 1}.weight"], out[f"conv{i + 1}.bias"] = conv.weight, conv.bias
    for name in ["fc1", "fc2"]:
        out[f"{name}.weight"], out[f"{name}.bias"] = getattr(model, name).weight, getattr(model, name).bias
    return out


@torch.no_grad()
def run_batches(model, u8, fn, bs=1000):
    return torch.cat([fn(torch.from_numpy(to_model_input(u8[i:i + bs]))) for i in range(0, len(u8), bs)])


@torch.no_grad()
def accuracy(model, x, y):
    logits = run_batches(model, x, model)
    return float((logits.argmax(1).numpy() == y).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--sample", type=int, default=2000, help="feature sample sizes shipped")
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (smoke tests)")
    ap.add_argument("--data", default=os.path.join(OUT, "data.npz"))
    ap.add_argument("--weights", default=os.path.join(REPO, "weights", "demo"))
    a = ap.parse_args()
    setup(0, threads=1)
    os.makedirs(OUT, exist_ok=True)
    logf = open(os.path.join(OUT, "eval_net.log"), "w")
    d = np.load(a.data)
    tr_x, tr_y = d["train_x"], d["train_y"]
    model = EvalNet()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    bs = 128
    steps = a.epochs * (len(tr_x) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps, pct_start=0.1)
    rng = np.random.RandomState(0)
    t0, step = time.time(), 0
    for epoch in range(a.epochs):
        model.train()
        perm = rng.permutation(len(tr_x))
        for i in range(0, len(perm) - bs + 1, bs):
            idx = perm[i:i + bs]
            loss = F.cross_entropy(model(torch.from_numpy(to_model_input(tr_x[idx]))), torch.from_numpy(tr_y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == a.max_steps:
                break
            if step % 100 == 0:
                log(logf, f"epoch {epoch} step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
        model.eval()
        log(logf, f"epoch {epoch}: val accuracy {accuracy(model, d['val_x'], d['val_y']):.4f}")

    # Round to float16 and reload: every number below comes from the shipped weights.
    tensors = {k: v.detach().to(torch.float16) for k, v in state_names(model).items()}
    save_f16(tensors, os.path.join(a.weights, "eval_net.safetensors"))
    with torch.no_grad():
        for k, v in state_names(model).items():
            v.copy_(tensors[k].float())
    model.eval()
    test_acc = accuracy(model, d["test_x"], d["test_y"])
    val_acc = accuracy(model, d["val_x"], d["val_y"])
    train_acc = accuracy(model, tr_x[:10000], tr_y[:10000])
    log(logf, f"float16 weights: test accuracy {test_acc:.4f}, val {val_acc:.4f}, train (10k) {train_acc:.4f}, "
              f"{time.time() - t0:.0f} s")

    train_f = run_batches(model, tr_x, model.features).double().numpy()
    pick = np.random.RandomState(1)
    train_sample = train_f[pick.choice(len(train_f), a.sample, replace=False)]
    test_idx = pick.choice(len(d["test_x"]), a.sample, replace=False)
    test_sample = run_batches(model, d["test_x"][test_idx], model.features).numpy()
    save_file({
        "train_mean": torch.from_numpy(train_f.mean(0)).float(),
        "train_cov": torch.from_numpy(np.cov(train_f, rowvar=False)).float(),
        "train_sample": torch.from_numpy(train_sample).half(),
        "test_sample": torch.from_numpy(test_sample).half(),
        "test_labels": torch.from_numpy(d["test_y"][test_idx].astype(np.float32)),
    }, os.path.join(a.weights, "eval_reference.safetensors"))
    json.dump({
        "file": "eval_net.safetensors",
        "reference": "eval_reference.safetensors",
        "image_size": 32,
        "channels": CHANNELS,
        "feature_dim": FEATURE_DIM,
        "num_classes": NUM_CLASSES,
        "train_images": int(len(tr_x)),
        "test_accuracy": round(test_acc, 4),
    }, open(os.path.join(a.weights, "eval_net.json"), "w"), indent=2)

    golden_u8 = d["test_x"][:4]
    x = torch.from_numpy(to_model_input(golden_u8))
    with torch.no_grad():
        feats = model.features(x)
        logits = model.logits(feats)
    json.dump({"pixels": golden_u8.astype(int).tolist(), "labels": d["test_y"][:4].tolist(),
               "features": feats.tolist(), "logits": logits.tolist()},
              open(os.path.join(REPO, "tests", "data", "eval_net_golden.json"), "w"))
    log(logf, "wrote eval_net.safetensors, eval_net.json, eval_reference.safetensors, eval_net_golden.json")


if __name__ == "__main__":
    main()
