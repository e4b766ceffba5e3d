"""Reference values of `spire eval`'s metrics (src/eval/) on fixed data -> tests/data/eval_metrics_golden.json.

NumPy/SciPy computations the Rust tests compare against:
- Frechet distance between Gaussians fitted to two feature sets (mean, unbiased covariance),
  with scipy.linalg.sqrtm as in the standard FID code (pytorch-fid / TTUR);
- class accuracy of logits under requested labels;
- k-NN precision/recall (Kynkaanniemi et al. 2019, k = 3): the k-th nearest-neighbour radius of
  each point among its own set (itself excluded), a sample counted when it lies within some
  radius of the other set;
- bootstrap 95% normal intervals (estimate +- 1.96 x the sample standard deviation over given
  resample indices), so the Rust test needs no shared random generator.

usage: python eval_metrics_ref.py
"""
import json
import os

import numpy as np
from scipy import linalg

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "data", "eval_metrics_golden.json")


def frechet(a, b):
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def radii(x, k):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def coverage(samples, manifold, k):
    r = radii(manifold, k)
    d = np.sqrt(((samples[:, None] - manifold[None]) ** 2).sum(-1))
    return float((d <= r[None]).any(1).mean())


def normal_interval(point, resampled):
    sd = float(np.std(resampled, ddof=1))
    return [point - 1.959963984540054 * sd, point + 1.959963984540054 * sd]


def main():
    rng = np.random.RandomState(0)
    dim, n_real, n_fake, k = 6, 120, 100, 3
    mix = rng.randn(dim, dim) * 0.5
    real = rng.randn(n_real, dim) @ mix + 0.2
    fake = (rng.randn(n_fake, dim) * 1.3) @ mix + 0.5
    classes = 4
    logits = rng.randn(n_fake, classes)
    labels = rng.randint(0, classes, n_fake)
    correct = (logits.argmax(1) == labels).astype(float)
    resamples = rng.randint(0, n_fake, (25, n_fake))
    boot_fid = [frechet(real, fake[idx]) for idx in resamples]
    boot_acc = [correct[idx].mean() for idx in resamples]
    golden = {
        "real": real.tolist(), "fake": fake.tolist(), "k": k,
        "logits": logits.tolist(), "labels": labels.tolist(),
        "fid": frechet(real, fake),
        "fid_identical": frechet(real, real),
        "accuracy": float(correct.mean()),
        "precision": coverage(fake, real, k),
        "recall": coverage(real, fake, k),
        "resamples": resamples.tolist(),
        "fid_interval": normal_interval(frechet(real, fake), boot_fid),
        "accuracy_interval": normal_interval(float(correct.mean()), boot_acc),
    }
    with open(OUT, "w") as f:
        json.dump(golden, f)
    print(f"wrote {OUT}: fid {golden['fid']:.6f}, precision {golden['precision']:.3f}, recall {golden['recall']:.3f}")


if __name__ == "__main__":
    main()
