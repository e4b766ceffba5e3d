"""Probe of the CSpD acceptance between a target and a draft checkpoint, in seconds, without spire.

For n validation images: a random order, a random number of visible tokens (the scaled posterior
means of the image; one number per group of images, as MAR's encoder needs), and the next position in the order predicted by both models from the same
prefix (the first position of a CSpD window, where the two conditionings are identical), with
the same x_T and per-step noise, guidance `--cfg` (constant) and temperature `--temperature`,
through the 100-step head sampler of `mar_torch` (CSpD's DistributionManager statistics).
Prints the components of log r~ (spec §2.3, §2.6) and the mean acceptance min(1, r~) they give:

- the first sampler step's x0_hat = sqrt(1/abar) x_T - sqrt(1/abar - 1) eps_hat at t = 999, where
  sqrt(1/abar) is about 20,000: an eps error e there moves mu_99 by about 317 e;
- `dmu`: RMS over tokens and channels of mu_0(draft) - mu_0(target);
- `gauss(tau_a)`: the tempered log ratio of the final-step Gaussians at the draft's token
  (x = mu_0 for the code's deterministic final step, mu_0 + sigma_0 eps_0 for the paper's);
- `logF`: sum over channels and steps k >= 1 of log sigma_k(target) - log sigma_k(draft) (the
  code's factor; the paper's is its negative).

usage: python probe_acceptance.py [--target out/target.pt] [--draft out/draft.pt] [--n 256]
"""
import argparse
import os

import numpy as np
import torch

from models import OUT, tokens_of
import mar_torch


def load(path):
    """The EMA weights of a checkpoint as a float64 model in eval mode."""
    ckpt = torch.load(path)
    model = mar_torch.MAR(ckpt["cfg"])
    model.load_state_dict(ckpt["model_ema"])
    return model.double().eval()


def head_laws(model, diffusion, tokens, mask, labels, pos, noise, inter, cfg, temperature):
    """(mu_0, sigma_0 * temperature, sum_{k>=1} log sigma_k, x0_hat of the first step) [n, C] of
    `model` at positions `pos`."""
    z = model.enc_dec(torch.cat([tokens, tokens]), torch.cat([mask, mask]), model.class_embed_cfg(labels, cfg))
    rows = torch.arange(len(pos))
    zc = torch.cat([z[rows, pos], z[len(pos) + rows, pos]])
    _, mean, std, log_sigma = mar_torch.sample_with_inter_noise(
        model.diffloss.net, diffusion, zc, torch.cat([noise, noise]), torch.cat([inter, inter], 1), temperature, cfg)
    k = diffusion.num_timesteps - 1
    _, _, x0_first = diffusion.p_mean_variance(model.diffloss.net.forward_with_cfg, torch.cat([noise, noise]), k,
                                               c=zc, cfg_scale=cfg)
    n = len(pos)
    return mean[:n], std[:n], log_sigma[:n], x0_first[:n]


def tempered(x, mean, std, tau):
    """sum_d -((x - mean) / (std tau))^2 / 2 - log std (spire's tempered log density)."""
    return (-0.5 * ((x - mean) / (std * tau)) ** 2 - torch.log(std)).sum(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=os.path.join(OUT, "target.pt"))
    ap.add_argument("--draft", default=os.path.join(OUT, "draft.pt"))
    ap.add_argument("--n", type=int, default=256, help="tokens probed (one per validation image)")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--group", type=int, default=16, help="images that share a number of visible tokens")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    lat = np.load(os.path.join(OUT, "latents.npz"))
    scale = torch.load(os.path.join(OUT, "vae.pt"))["scale_factor"]
    target, draft = load(a.target), load(a.draft)
    tokens = tokens_of(torch.from_numpy(lat["val_mean"][:a.n].astype(np.float64) * scale))
    labels = torch.from_numpy(lat["val_y"][:a.n]).long()
    n, seq_len, c = tokens.shape
    diffusion = mar_torch.Diffusion(100, 1000)
    laws = []
    for i in range(0, n, a.group):
        rows = slice(i, min(n, i + a.group))
        m = rows.stop - rows.start
        orders = np.argsort(rng.rand(m, seq_len), axis=1)
        visible = rng.randint(4, seq_len)
        mask = torch.ones(m, seq_len, dtype=torch.float64)
        mask.scatter_(1, torch.from_numpy(orders[:, seq_len - visible:]), 0.0)
        pos = torch.from_numpy(orders[:, seq_len - visible - 1])
        noise = torch.randn(m, c, dtype=torch.float64)
        inter = torch.randn(100, m, c, dtype=torch.float64)
        with torch.no_grad():
            p = head_laws(target, diffusion, tokens[rows], mask, labels[rows], pos, noise, inter, a.cfg, a.temperature)
            q = head_laws(draft, diffusion, tokens[rows], mask, labels[rows], pos, noise, inter, a.cfg, a.temperature)
        laws.append(p + q + (torch.randn(m, c, dtype=torch.float64),))
    mp, sp, lp, xp, mq, sq, lq, xq, eps0 = (torch.cat(t) for t in zip(*laws))
    rms = lambda t: t.pow(2).mean().sqrt()  # noqa: E731
    print(f"first step (t = 999): x0_hat RMS target {rms(xp):.1f}, draft {rms(xq):.1f}, difference {rms(xq - xp):.1f} "
          f"(= {diffusion.recip[-1]:.0f} x the eps difference; mu_99 moves by {diffusion.coef1[-1]:.4f} x x0_hat)")
    log_f = (lp - lq).sum(1)
    print(f"{n} tokens; dmu RMS {(mq - mp).pow(2).mean().sqrt():.4f} (token RMS {mp.pow(2).mean().sqrt():.3f}); "
          f"sigma_0 target {sp.mean():.5f} draft {sq.mean():.5f}; logF mean {log_f.mean():.2f} sd {log_f.std():.2f}")
    rules = {"code (tau_a 42, factor code, deterministic)": (mq, 42.0, log_f),
             "code, factor paper": (mq, 42.0, -log_f),
             "code, no factor": (mq, 42.0, 0 * log_f),
             "paper (tau_a 1, factor paper, stochastic)": (mq + sq * eps0, 1.0, -log_f)}
    for name, (x, tau, lf) in rules.items():
        gauss = tempered(x, mp, sp, tau) - tempered(x, mq, sq, tau)
        alpha = torch.exp(torch.clamp(gauss + lf, max=0.0)).mean()
        print(f"{name}: gauss median {gauss.median():.2f}, log r median {(gauss + lf).median():.2f}, "
              f"alpha {alpha:.3f}")


if __name__ == "__main__":
    main()
