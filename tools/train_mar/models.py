"""Model definitions for the continuous demo (`weights/demo-mar/`): the KL autoencoder and the
training side of MAR (masking, class dropout, diffusion loss).

The generation halves are the reference modules of `tools/reference/mar_torch.py`
(`VAEDecoder`, `MAR` with its `DiffLoss` head), which carry the official LTH14/mar and LDM
module structure, so `state_dict()` gives exactly the tensor names spire loads. What training
adds is written here: a small LDM-style encoder producing the posterior moments, the official
weight initialisation, MAR's masked training step and the diffusion loss (epsilon MSE plus the
variational bound for the LEARNED_RANGE variances, over the 1000-step cosine schedule).
"""
import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "train"))

import mar_torch  # noqa: E402
from check_torch import Attn, Resnet  # noqa: E402

# The "vae" section: 32x32 px -> 8x8 latents of 16 channels (two upsamplings).
VAE = {"file": "vae.safetensors", "embed_dim": 16, "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1,
       "out_ch": 3, "norm_groups": 8, "scale_factor": 1.0}


def mar_section(size, scale_vae=VAE):
    """The "mar" (target) or "draft" config section of the demo models."""
    enc, dec, heads, width, head_w, head_d = {"target": (3, 3, 4, 128, 128, 3),
                                              "draft": (1, 1, 4, 128, 128, 3)}[size]
    return {"file": "mar.safetensors" if size == "target" else "draft.safetensors", "img_size": 32,
            "vae_stride": 4, "patch_size": 1, "vae_embed_dim": scale_vae["embed_dim"],
            "encoder_embed_dim": width, "encoder_depth": enc, "encoder_num_heads": heads,
            "decoder_embed_dim": width, "decoder_depth": dec, "decoder_num_heads": heads,
            "mlp_ratio": 4.0, "norm_eps": 1e-6, "class_num": 10, "buffer_size": 8,
            "diffloss_d": head_d, "diffloss_w": head_w, "num_sampling_steps": 100,
            "diffusion_steps": 1000, "noise_schedule": "cosine"}


def training_args(budget_s, lr):
    """The flags every training script takes: wall-clock budget, step cap (smoke tests), batch,
    peak learning rate, CPU threads."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-s", type=float, default=budget_s, help="wall-clock training budget")
    ap.add_argument("--max-steps", type=int, default=10**9, help="stop after this many steps (smoke tests: 3)")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    ap.add_argument("--threads", type=int, default=1)
    return ap


# ----------------------------------------------------------------------------- KL autoencoder

class Encoder(nn.Module):
    """LDM-style encoder (training only, not shipped): conv_in, per level ResNet blocks and a
    stride-2 conv, mid ResNet/attention/ResNet, GroupNorm-swish, conv to 2 * embed_dim moments."""

    def __init__(self, cfg):
        super().__init__()
        ch, mult, g = cfg["ch"], cfg["ch_mult"], cfg["norm_groups"]
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        layers, c = [], ch
        for i, m in enumerate(mult):
            for _ in range(cfg["num_res_blocks"]):
                layers.append(Resnet(c, ch * m, g))
                c = ch * m
            if i != len(mult) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers += [Resnet(c, c, g), Attn(c, g), Resnet(c, c, g), nn.GroupNorm(g, c, eps=1e-6), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(c, 2 * cfg["embed_dim"], 3, padding=1)

    def forward(self, x):
        """Images [n, 3, 32, 32] -> moments [n, 2 * embed_dim, 8, 8]."""
        return self.conv_out(self.body(self.conv_in(x)))


class KLAutoencoder(nn.Module):
    """Encoder -> diagonal Gaussian posterior (mean, log-variance clamped to [-30, 20] as LDM) ->
    sample -> `mar_torch.VAEDecoder` (post_quant_conv + LDM decoder, official names)."""

    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.dec = mar_torch.VAEDecoder(cfg)

    def moments(self, x):
        """Posterior mean and (clamped) log-variance of images x."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(self, x):
        """Reconstruction from a posterior sample, and the KL per image."""
        mean, logvar = self.moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
        return self.dec.decode(z), kl


# ----------------------------------------------------------------------------- MAR training

def init_mar(model):
    """Official initialisation: xavier-uniform linears with zero bias, LayerNorms (1, 0),
    class_emb / fake_latent / mask_token / position embeddings N(0, 0.02); in the head, the
    timestep MLP N(0, 0.02) and zeroed adaLN modulations and final projection."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for p in (model.class_emb.weight, model.fake_latent, model.mask_token, model.encoder_pos_embed_learned,
              model.decoder_pos_embed_learned, model.diffusion_pos_embed_learned):
        nn.init.normal_(p, std=0.02)
    net = model.diffloss.net
    nn.init.normal_(net.time_embed.mlp[0].weight, std=0.02)
    nn.init.normal_(net.time_embed.mlp[2].weight, std=0.02)
    zero = [b.adaLN_modulation[-1] for b in net.res_blocks]
    zero += [net.final_layer.adaLN_modulation[-1], net.final_layer.linear]
    for lin in zero:
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)


def mask_ratio_sampler(rng, n):
    """MAR's training mask rate: a normal(1, 0.25) truncated to [0.7, 1] (rejection sampling)."""
    out = []
    while len(out) < n:
        r = rng.normal(1.0, 0.25)
        if 0.7 <= r <= 1.0:
            out.append(r)
    return out


def random_mask(bsz, seq_len, rng):
    """One mask rate per batch (MAR masks the same count in every row), random orders per row:
    returns the float mask [bsz, seq_len] (1 = masked, to predict)."""
    rate = mask_ratio_sampler(rng, 1)[0]
    n_mask = int(math.ceil(seq_len * rate))
    orders = np.argsort(rng.rand(bsz, seq_len), axis=1)
    mask = np.zeros((bsz, seq_len), np.float32)
    np.put_along_axis(mask, orders[:, :n_mask], 1.0, axis=1)
    return torch.from_numpy(mask)


class DiffusionLoss:
    """Training loss of DiffLoss over the full 1000-step cosine schedule (the schedule of
    `mar_torch.Diffusion(1000, 1000)`): epsilon MSE plus the variational-bound term of the
    learned-range variance with the mean frozen, in bits per dimension (t = 0: discretized
    Gaussian decoder likelihood), as the DiT/ADM `training_losses` MAR uses."""

    def __init__(self, steps=1000):
        d = mar_torch.Diffusion(steps, steps)
        f = lambda t: t.float()  # noqa: E731
        self.steps = steps
        self.abar = f(torch.cumprod(1 - d.betas, 0))
        self.log_betas = f(torch.log(d.betas))
        self.post_log_var = f(d.post_log_var)
        self.coef1, self.coef2, self.recip, self.recipm1 = f(d.coef1), f(d.coef2), f(d.recip), f(d.recipm1)

    def noised(self, x0, t=None, noise=None):
        """Timesteps t (uniform in 0..steps-1 unless given), noise (standard normal unless given)
        and the noised inputs x_t of targets x0 [n, C]."""
        if t is None:
            t = torch.randint(0, self.steps, (x0.shape[0],))
        if noise is None:
            noise = torch.randn_like(x0)
        a = self.abar[t][:, None]
        return t, noise, a.sqrt() * x0 + (1 - a).sqrt() * noise

    def terms(self, out, x0, xt, t, noise):
        """Per-row loss of the head output `out` = [eps, v] at (x_t, t) for targets x0 and noise."""
        eps, v = out.chunk(2, dim=1)
        mse = ((noise - eps) ** 2).mean(1)
        g = lambda arr: arr[t][:, None]  # noqa: E731
        true_mean = g(self.coef1) * x0 + g(self.coef2) * xt
        true_logvar = g(self.post_log_var)
        frac = (v + 1) / 2
        logvar = frac * g(self.log_betas) + (1 - frac) * true_logvar
        x0_pred = g(self.recip) * xt - g(self.recipm1) * eps.detach()
        mean = g(self.coef1) * x0_pred + g(self.coef2) * xt
        kl = 0.5 * (-1.0 + logvar - true_logvar + torch.exp(true_logvar - logvar)
                    + (true_mean - mean) ** 2 * torch.exp(-logvar))
        nll = -discretized_gaussian_loglik(x0, mean, 0.5 * logvar)
        vb = torch.where(t[:, None] == 0, nll, kl).mean(1) / math.log(2.0)
        return mse + vb

    def __call__(self, net, x0, z):
        """Per-row loss of the head `net` on targets x0 [n, C] given conditions z [n, D]."""
        t, noise, xt = self.noised(x0)
        return self.terms(net(xt, t.float(), z), x0, xt, t, noise)


def _approx_cdf(x):
    """ADM's tanh approximation of the standard normal CDF."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_loglik(x, means, log_scales):
    """ADM's log-likelihood of x under a Gaussian discretized to 256 bins on [-1, 1]."""
    centered = x - means
    inv = torch.exp(-log_scales)
    cdf_plus = _approx_cdf(inv * (centered + 1.0 / 255))
    cdf_min = _approx_cdf(inv * (centered - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus, log_delta))


def masked_step(bsz, seq_len, rng, label_drop):
    """The random parts of one MAR training step: the mask (random_mask) and which rows drop
    their class label to `fake_latent` ([bsz, 1] floats, 1 = dropped)."""
    mask = random_mask(bsz, seq_len, rng)
    return mask, torch.from_numpy((rng.rand(bsz) < label_drop).astype(np.float32))[:, None]


def conditions(model, tokens, labels, mask, drop):
    """Head conditions z [bsz, seq_len, D] of `model` for the visible tokens, with the rows in
    `drop` conditioned on `fake_latent` instead of their class."""
    emb = drop * model.fake_latent + (1 - drop) * model.class_emb(labels)
    return model.enc_dec(tokens, mask, emb)


def mar_loss(model, diff_loss, tokens, labels, rng, label_drop=0.1, batch_mul=2):
    """One MAR training step's loss: random orders and a truncated-normal mask rate, class
    dropout to `fake_latent` (for CFG), encoder over the visible tokens, decoder over all, the
    diffusion loss on the masked positions with each target repeated `batch_mul` times."""
    mask, drop = masked_step(*tokens.shape[:2], rng, label_drop)
    z = conditions(model, tokens, labels, mask, drop)
    idx = mask.bool()
    zs, xs = z[idx].repeat(batch_mul, 1), tokens[idx].repeat(batch_mul, 1)
    return diff_loss(model.diffloss.net, xs, zs).mean()


def distill_loss(model, teacher, diff_loss, tokens, labels, rng, label_drop=0.1, batch_mul=2, data_weight=0.0):
    """Knowledge distillation of a MAR draft from a frozen target `teacher`: both models see the
    same masked tokens, class labels and dropouts, and both heads the same (x_t, t) built from the
    same noise; the loss is the squared error between the draft's head output and the target's,
    over all 2C channels (epsilon and the learned-variance interpolation v), plus `data_weight`
    times the ordinary diffusion loss. Matching the target's outputs on shared noise is what
    keeps the two denoising trajectories of CSpD (which share their noise) close."""
    mask, drop = masked_step(*tokens.shape[:2], rng, label_drop)
    idx = mask.bool()
    z = conditions(model, tokens, labels, mask, drop)[idx].repeat(batch_mul, 1)
    xs = tokens[idx].repeat(batch_mul, 1)
    t, noise, xt = diff_loss.noised(xs)
    out = model.diffloss.net(xt, t.float(), z)
    with torch.no_grad():
        zt = conditions(teacher, tokens, labels, mask, drop)[idx].repeat(batch_mul, 1)
        ref = teacher.diffloss.net(xt, t.float(), zt)
    loss = ((out - ref) ** 2).mean(1)
    if data_weight:
        loss = loss + data_weight * diff_loss.terms(out, xs, xt, t, noise)
    return loss.mean()


def tokens_of(latents):
    """[N, C, h, w] latents -> [N, h*w, C] tokens, row-major grid (MAR's patchify, patch 1)."""
    n, c, h, w = latents.shape
    return latents.permute(0, 2, 3, 1).reshape(n, h * w, c)


def n_params(module):
    """Parameter count of `module`."""
    return sum(p.numel() for p in module.parameters())
