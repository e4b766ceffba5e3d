"""How recognisable each class of a sample grid is: the share of its images that `weights/demo`'s
evaluation network (the classifier of `spire eval`, 90.1 % on the Fashion-MNIST test split)
assigns to the row's class, next to the same network's accuracy on that class's test images.

The grid is a `spire generate --class 0,1,...,9 --samples K` PNG: one row per class, K images
of 32x32 per row, 2-pixel gaps. Prints one line per class and the mean.

usage: python grid_accuracy.py GRID.png [--eval-net ../../weights/demo] [--cell 32] [--gap 2]
"""
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from common import HERE
from prep_data import to_model_input
from train_eval_net import EvalNet, state_names

CLASSES = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def load_eval_net(d):
    """The evaluation network of weights directory `d` (eval_net.json names its file)."""
    net = EvalNet()
    tensors = load_file(os.path.join(d, json.load(open(os.path.join(d, "eval_net.json")))["file"]))
    with torch.no_grad():
        for name, param in state_names(net).items():
            param.copy_(tensors[name].float())
    return net.eval()


def grid_cells(path, cell, gap):
    """[rows, cols, 3, cell, cell] float images in [-1, 1] of a grid PNG."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    rows, cols = (img.shape[0] + gap) // (cell + gap), (img.shape[1] + gap) // (cell + gap)
    out = np.stack([np.stack([img[r * (cell + gap):r * (cell + gap) + cell, c * (cell + gap):c * (cell + gap) + cell]
                              for c in range(cols)]) for r in range(rows)])
    return torch.from_numpy(out).permute(0, 1, 4, 2, 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("grid")
    ap.add_argument("--eval-net", default=os.path.join(HERE, "..", "..", "weights", "demo"))
    ap.add_argument("--cell", type=int, default=32)
    ap.add_argument("--gap", type=int, default=2)
    ap.add_argument("--test-data", default=os.path.join(HERE, "out", "data.npz"),
                    help="prep_data.py's output, for the per-class test accuracy (skipped if absent)")
    a = ap.parse_args()
    net = load_eval_net(a.eval_net)
    cells = grid_cells(a.grid, a.cell, a.gap)
    test = None
    if os.path.exists(a.test_data):
        d = np.load(a.test_data)
        with torch.no_grad():
            pred = net(torch.from_numpy(to_model_input(d["test_x"]))).argmax(1).numpy()
        test = [(pred[d["test_y"] == k] == k).mean() for k in range(10)]
    with torch.no_grad():
        pred = net(cells.flatten(0, 1)).argmax(1).reshape(cells.shape[:2])
    accs = []
    for k in range(cells.shape[0]):
        accs.append((pred[k] == k).float().mean().item())
        ref = f", test split {test[k]:.2f}" if test else ""
        print(f"class {k} {CLASSES[k]:<12} {accs[-1]:.2f} of {cells.shape[1]}{ref}")
    print(f"mean {np.mean(accs):.3f}" + (f", test split {np.mean(test):.3f}" if test else ""))


if __name__ == "__main__":
    main()
