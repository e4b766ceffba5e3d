"""Step 1: Fashion-MNIST -> out/data.npz (uint8 32x32 images + labels, train/val/test splits).

28x28 images are zero-padded by 2 px on each side to 32x32 (the background is 0 = black).
Model inputs are made on the fly by `to_model_input`: grayscale replicated to 3 channels and
scaled to [-1, 1] with x / 127.5 - 1.

Splits: the 60,000 official training images are shuffled with a fixed seed; the last 5,000 are the
validation split (tokenizer PSNR, early stopping), the first 55,000 train.  The 10,000 official
test images are kept as a test split (reported only).

usage: python prep_data.py [--src /usr/share/datasets/fashion-mnist] [--out out/data.npz]
"""
import argparse
import gzip
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def to_model_input(u8):
    """uint8 [N, 32, 32] -> float32 [N, 3, 32, 32] in [-1, 1] (numpy)."""
    x = u8.astype(np.float32) / 127.5 - 1.0
    return np.repeat(x[:, None], 3, axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "data.npz"))
    ap.add_argument("--n-val", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    tr_x = read_idx(os.path.join(a.src, "train-images-idx3-ubyte.gz"))
    tr_y = read_idx(os.path.join(a.src, "train-labels-idx1-ubyte.gz"))
    te_x = read_idx(os.path.join(a.src, "t10k-images-idx3-ubyte.gz"))
    te_y = read_idx(os.path.join(a.src, "t10k-labels-idx1-ubyte.gz"))
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=0)
    tr_x, te_x = pad(tr_x), pad(te_x)
    perm = np.random.RandomState(a.seed).permutation(len(tr_x))
    tr_x, tr_y = tr_x[perm], tr_y[perm]
    nv = a.n_val
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    np.savez_compressed(a.out,
                        train_x=tr_x[:-nv], train_y=tr_y[:-nv].astype(np.int64),
                        val_x=tr_x[-nv:], val_y=tr_y[-nv:].astype(np.int64),
                        test_x=te_x, test_y=te_y.astype(np.int64))
    print(f"wrote {a.out}: train {len(tr_x) - nv}, val {nv}, test {len(te_x)}, shape {tr_x.shape[1:]}")


if __name__ == "__main__":
    main()
