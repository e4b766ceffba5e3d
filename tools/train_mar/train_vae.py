"""Step 1: train the KL autoencoder, then encode the data set to latent moments.

Writes out/vae.pt (encoder + decoder, float32, and the latent scale factor), out/latents.npz
(posterior mean and std of every train / val image, float16) and out/vae.log.

Loss per image: sum of squared errors over the 3x32x32 pixels in [-1, 1] + beta * KL(posterior ||
N(0, I)) summed over the 16x8x8 latent. The scale factor is 1 / std of posterior samples on the
train split (MAR's 0.2325 plays this role for KL-16), so the scaled tokens have unit variance.

usage: python train_vae.py [--budget-s 420] [--max-steps N] [--bs 64] [--lr 2e-3] [--beta 0.02]
"""
import json
import math
import os
import time

import numpy as np
import torch

from models import OUT, VAE, KLAutoencoder, n_params, training_args
from common import EpochBatches, TimeCosine, log, setup
from prep_data import to_model_input


def evaluate(vae, x_u8, bs=500):
    """(mean PSNR in dB on [0, 1] pixels with the posterior mean, mean KL in nats per image)."""
    vae.eval()
    ps, kls = [], []
    with torch.no_grad():
        for i in range(0, len(x_u8), bs):
            x = torch.from_numpy(to_model_input(x_u8[i:i + bs]))
            mean, logvar = vae.moments(x)
            y = vae.dec.decode(mean).clamp(-1, 1)
            mse = ((y - x) ** 2).mean(dim=(1, 2, 3)) / 4.0
            ps.append((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).numpy())
            kls.append((0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)).numpy())
    vae.train()
    return float(np.concatenate(ps).mean()), float(np.concatenate(kls).mean())


def encode(vae, x_u8, bs=500):
    """Posterior (mean, std) [N, 16, 8, 8] of every image."""
    vae.eval()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(x_u8), bs):
            mean, logvar = vae.moments(torch.from_numpy(to_model_input(x_u8[i:i + bs])))
            means.append(mean.numpy())
            stds.append(torch.exp(0.5 * logvar).numpy())
    return np.concatenate(means), np.concatenate(stds)


def main():
    ap = training_args(420, 2e-3)
    ap.add_argument("--beta", type=float, default=0.02, help="KL weight against the summed squared error")
    a = ap.parse_args()
    setup(0, a.threads)
    lf = open(os.path.join(OUT, "vae.log"), "a")
    d = np.load(os.path.join(OUT, "data.npz"))
    tx, vx = d["train_x"], d["val_x"]
    vae = KLAutoencoder(VAE)
    log(lf, f"vae {VAE}; encoder {n_params(vae.encoder)} params, decoder {n_params(vae.dec)} params; beta {a.beta}")
    opt = torch.optim.Adam(vae.parameters(), lr=a.lr, betas=(0.9, 0.99))
    sched = TimeCosine(opt, a.lr, a.budget_s, warmup=50, floor=0.05)
    batches, it, t0, run = EpochBatches(len(tx), a.bs, np.random.RandomState(1)), 0, time.time(), None
    while it < a.max_steps and not sched.done():
        x = torch.from_numpy(to_model_input(tx[batches.next()]))
        lr = sched.step(it)
        y, kl = vae(x)
        sse = ((y - x) ** 2).flatten(1).sum(1)
        loss = (sse + a.beta * kl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        cur = np.array([sse.mean().item(), kl.mean().item()])
        run = cur if run is None else 0.98 * run + 0.02 * cur
        it += 1
        if it % 50 == 0:
            p = 10 * math.log10(4.0 * 3072 / max(run[0], 1e-10))
            log(lf, f"step {it} lr {lr:.2e} sse {run[0]:.1f} (~{p:.2f} dB) kl {run[1]:.1f} nats {time.time() - t0:.0f}s")
    train_s = time.time() - t0
    vp, vkl = evaluate(vae, vx)
    tm, ts = encode(vae, tx)
    vm, vs = encode(vae, vx)
    sample = tm + ts * np.random.RandomState(2).randn(*tm.shape).astype(np.float32)
    scale = float(1.0 / sample.std())
    log(lf, f"done: {it} steps in {train_s:.0f}s; val PSNR {vp:.2f} dB (posterior mean), KL {vkl:.1f} nats/image; "
            f"latent std {sample.std():.4f} -> scale_factor {scale:.4f}")
    torch.save({"model": vae.state_dict(), "scale_factor": scale, "cfg": VAE}, os.path.join(OUT, "vae.pt"))
    np.savez(os.path.join(OUT, "latents.npz"), train_mean=tm.astype(np.float16), train_std=ts.astype(np.float16),
             train_y=d["train_y"], val_mean=vm.astype(np.float16), val_std=vs.astype(np.float16), val_y=d["val_y"])
    with open(os.path.join(OUT, "vae_metrics.json"), "w") as f:
        json.dump({"steps": it, "train_s": round(train_s), "val_psnr_db": round(vp, 2), "val_kl_nats": round(vkl, 1),
                   "scale_factor": scale, "beta": a.beta}, f, indent=1)


if __name__ == "__main__":
    main()
