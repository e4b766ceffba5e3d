#!/usr/bin/env python3
"""Cross-check the MAR golden data and the NumPy reference against PyTorch.

    .venv/bin/python tools/reference/check_torch_mar.py [--dir tests/data/mar_tiny] [--official DIR]

1. mar_torch.py (the official module structure, written independently; weights loaded with
   load_state_dict(strict=True)) runs every golden computation in float64, batched and CFG-doubled
   like the official code. It must agree with the NumPy reference (recomputed) to 1e-10 and with
   the float32 golden tensors to 2e-6, both relative to the tensor's largest magnitude; the
   schedule constants (float64 in the golden file) to 1e-12. The spec's reference values (§1.5,
   §1.4, tests U1-U3) are checked too.
2. For information, the same in float32 (the scale of deviation a float32 port should expect).
3. With --official DIR (a plain checkout of MarkXCloud/CSpD, which carries MAR's models and
   diffusion code plus the sampler that takes its noise from outside; needs timm 0.9.12), the
   official modules themselves are built, loaded with the tiny weights and run in float32 on CPU
   (the official head computes its timestep sinusoid and schedule coefficients in float32, so it
   cannot run in float64). Compared with the golden values; must be within 5e-5 relative.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_mar_golden as make  # noqa: E402
import mar_ref as ref  # noqa: E402
import mar_torch as mt  # noqa: E402

TOL_NUMPY, TOL_GOLDEN, TOL_SCHED, TOL_OFFICIAL = 1e-10, 2e-6, 1e-12, 5e-5
MODEL_OUTPUTS = ["encoder_out_cond", "z_cond", "z_uncond", "z_cond_all_masked", "head_out", "head_out_cfg",
                 "pmv_mean", "pmv_log_var", "pmv_x0", "run_x0", "run_mu0", "run_sigma0", "run_sum_log_sigma",
                 "gen_tokens", "vae_pixels"]
SCHEDULE = ["sched_timestep_map", "sched_betas", "sched_alphas_cumprod", "sched_posterior_log_variance_clipped",
            "sched_coef1", "sched_coef2", "temb"]


def rel_err(a, b):
    """max |a - b| / max |b| (absolute when b is all zero)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / max(b.abs().max().item(), 1e-300)).item()


class Report:
    """Prints comparisons and remembers failures."""

    def __init__(self):
        self.failures = []

    def check(self, name, ok, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        if not ok:
            self.failures.append(name)

    def compare(self, name, a, b, tol):
        err = rel_err(a, b)
        self.check(name, err <= tol, f"max rel diff {err:.2e} (tol {tol:g})")


def load(d):
    """config sections, MAR and VAE weights (float32 torch) and the golden tensors."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["family"] == "mar"
    return (cfg["mar"], cfg["vae"], load_file(os.path.join(d, cfg["mar"]["file"])),
            load_file(os.path.join(d, cfg["vae"]["file"])), load_file(os.path.join(d, "golden.safetensors")))


def unpatchify(tokens, c, n, p):
    """[L, C p p] -> [1, C, n p, n p], as MAR.unpatchify ('nhwcpq->nchpwq')."""
    x = tokens.reshape(1, n, n, c, p, p)
    return torch.einsum("nhwcpq->nchpwq", x).reshape(1, c, n * p, n * p)


def torch_models(mcfg, vcfg, mw, vw, dtype):
    """mar_torch's MAR and VAE decoder with the tiny weights (strict loading) and the diffusion."""
    model = mt.MAR(mcfg).to(dtype).eval()
    model.load_state_dict({k: v.to(dtype) for k, v in mw.items()}, strict=True)
    vae = mt.VAEDecoder(vcfg).to(dtype).eval()
    vae.load_state_dict({k: v.to(dtype) for k, v in vw.items()}, strict=True)
    return model, vae, mt.Diffusion(mcfg["num_sampling_steps"], mcfg["diffusion_steps"])


def torch_transformer(model, g, dtype):
    """Encoder output and z for [cond; uncond] (one doubled batch) and for the all-masked grid."""
    tokens = g["tokens"].to(dtype)[None].expand(2, -1, -1)
    mask = g["mask"].to(dtype)[None].expand(2, -1)
    emb = model.class_embed_cfg(g["class_id"], 2.0)
    z = model.enc_dec(tokens, mask, emb)
    return {"encoder_out_cond": model.forward_mae_encoder(tokens, mask, emb)[0], "z_cond": z[0], "z_uncond": z[1],
            "z_cond_all_masked": model.enc_dec(tokens[:1], torch.ones_like(mask[:1]), emb[:1])[0]}


def torch_head(net, diffusion, g, dtype):
    """One head call (plain, and forward_with_cfg on the doubled batch), p_mean_variance, the full run."""
    def t(name):
        return g[name].to(dtype)

    x, ht, n = t("head_x"), t("head_t"), len(g["head_t"])
    out = {"head_out": net(x, ht, t("head_z_cond")),
           "head_out_cfg": net.forward_with_cfg(torch.cat([x, x]), torch.cat([ht, ht]),
                                                torch.cat([t("head_z_cond"), t("head_z_uncond")]),
                                                g["head_cfg_scale"].item())[:n]}
    out["pmv_mean"], out["pmv_log_var"], out["pmv_x0"] = diffusion.p_mean_variance(
        lambda *_: out["head_out_cfg"], x, g["pmv_step"].item())
    tau, nr = g["temperature"].item(), len(g["run_x_T"])
    noise = t("run_inter_noise").repeat(2, 1, 1).transpose(0, 1)
    sample, mean, std, log_sigma = mt.sample_with_inter_noise(
        net, diffusion, torch.cat([t("run_z_cond"), t("run_z_uncond")]), t("run_x_T").repeat(2, 1), noise, tau,
        g["run_cfg_scale"].item())
    out.update(run_x0=sample[:nr], run_mu0=mean[:nr], run_sigma0=std[:nr] / tau, run_sum_log_sigma=log_sigma[:nr])
    return out


def torch_outputs(mcfg, vcfg, mw, vw, g, dtype):
    """Every golden quantity from mar_torch.py in dtype: (model outputs, schedule constants)."""
    model, vae, diffusion = torch_models(mcfg, vcfg, mw, vw, dtype)
    net = model.diffloss.net
    out = {**torch_transformer(model, g, dtype), **torch_head(net, diffusion, g, dtype)}
    out["gen_tokens"] = mt.sample_tokens(model, diffusion, g["class_id"], g["order"][None], g["gen_num_iter"].item(),
                                         g["run_cfg_scale"].item(), "linear", g["temperature"].item(),
                                         g["gen_noise"].to(dtype)[None], g["gen_inter_noise"].to(dtype)[None])[0]
    grid = ref.grid_size(mcfg)
    latent = unpatchify(g["tokens"].to(dtype), mcfg["vae_embed_dim"], grid, mcfg["patch_size"])
    out["vae_pixels"] = vae.decode(latent / vcfg["scale_factor"])[0]
    sched = {"sched_timestep_map": torch.tensor(diffusion.timestep_map), "sched_betas": diffusion.betas,
             "sched_coef1": diffusion.coef1, "sched_coef2": diffusion.coef2,
             "sched_alphas_cumprod": torch.cumprod(1 - diffusion.betas, 0),
             "sched_posterior_log_variance_clipped": diffusion.post_log_var,
             "temb": net.time_embed.timestep_embedding(g["temb_t"])}
    return {k: v.detach() for k, v in out.items()}, sched


def numpy_outputs(mcfg, vcfg, mw, vw, g):
    """The same quantities recomputed by mar_ref.py (float64) through make_mar_golden's functions,
    from the golden file's inputs."""
    w = {k: v.double().numpy() for k, v in mw.items()}
    inp = {k: v.numpy() for k, v in g.items()}
    sched = ref.respaced_schedule(mcfg["num_sampling_steps"], mcfg["diffusion_steps"])
    return {**make.transformer_outputs(w, inp), **make.head_outputs(w, sched, inp),
            **make.generation_outputs(w, sched, inp),
            **make.vae_outputs({k: v.double().numpy() for k, v in vw.items()}, inp)[0]}


def check_spec_constants(rep, g):
    """Spec §1.5 reference values (U1), §1.4 mask counts (U2) and the t = 0 embedding (U3)."""
    b, abar = g["sched_betas"], g["sched_alphas_cumprod"]
    post_var1 = math.exp(g["sched_posterior_log_variance_clipped"][1].item())
    spec = [("beta'_0", b[0], 4.1284e-5), ("beta'_1", b[1], 6.7984e-4), ("beta'_2", b[2], 1.16552e-3),
            ("beta'_99", b[99], 0.99999), ("abar'_0", abar[0], 0.99995872), ("abar'_99", abar[99], 2.4288e-9),
            ("sigma~^2_1", post_var1, 3.8922e-5)]
    for name, got, want in spec:
        got = float(got)
        rep.check(f"U1 {name}", abs(got - want) <= 5e-5 * abs(want), f"{got:.6e} vs spec {want:g}")
    tm = g["sched_timestep_map"].tolist()
    rep.check("U1 timestep_map", tm[:11] == [0, 10, 20, 30, 40, 50, 61, 71, 81, 91, 101]
              and tm[-5:] == [959, 969, 979, 989, 999] and len(tm) == 100)
    n256, n64, n16 = (g[f"mask_counts_n{n}"].tolist() for n in (256, 64, 16))
    rep.check("U2 N=256: one token per step", n256 == [1] * 256)
    rep.check("U2 N=64 ends ...,6,6,7,6,6,6 and starts 1,1,1", n64[-6:] == [6, 6, 7, 6, 6, 6] and n64[:3] == [1, 1, 1])
    rep.check("U2 N=16 starts 2,3,7,8,11", n16[:5] == [2, 3, 7, 8, 11])
    rep.check("U2 counts sum to 256", sum(n256) == sum(n64) == sum(n16) == 256)
    rep.check("U3 emb(t=0) = [1]*128 ++ [0]*128", torch.equal(g["temb"][0], torch.cat([torch.ones(128), torch.zeros(128)]).double()))


def official_outputs(repo, mcfg, vcfg, mw, vw, g):
    """Golden quantities from the official CSpD/MAR modules themselves, float32 on CPU."""
    from functools import partial

    torch.Tensor.cuda = lambda self, *a, **k: self  # the official sampler calls .cuda() on index tensors
    sys.path.insert(0, repo)
    import models.mar as omar
    import models.vae as ovae

    model = omar.MAR(img_size=mcfg["img_size"], vae_stride=mcfg["vae_stride"], patch_size=mcfg["patch_size"],
                     encoder_embed_dim=mcfg["encoder_embed_dim"], encoder_depth=mcfg["encoder_depth"],
                     encoder_num_heads=mcfg["encoder_num_heads"], decoder_embed_dim=mcfg["decoder_embed_dim"],
                     decoder_depth=mcfg["decoder_depth"], decoder_num_heads=mcfg["decoder_num_heads"],
                     mlp_ratio=mcfg["mlp_ratio"], norm_layer=partial(torch.nn.LayerNorm, eps=mcfg["norm_eps"]),
                     vae_embed_dim=mcfg["vae_embed_dim"], class_num=mcfg["class_num"],
                     buffer_size=mcfg["buffer_size"], diffloss_d=mcfg["diffloss_d"], diffloss_w=mcfg["diffloss_w"],
                     num_sampling_steps=str(mcfg["num_sampling_steps"])).eval()
    # CSpD's copy hard-codes nn.Embedding(1000, ...) (fixed in MAR by "fix class num").
    model.class_emb = torch.nn.Embedding(mcfg["class_num"], mcfg["encoder_embed_dim"])
    model.load_state_dict(mw, strict=True)
    ovae.Normalize = lambda c, num_groups=32: torch.nn.GroupNorm(vcfg["norm_groups"], c, eps=1e-6, affine=True)
    vae = ovae.AutoencoderKL(embed_dim=vcfg["embed_dim"], ch_mult=tuple(vcfg["ch_mult"]))
    vae.decoder = ovae.Decoder(ch=vcfg["ch"], out_ch=vcfg["out_ch"], ch_mult=tuple(vcfg["ch_mult"]),
                               num_res_blocks=vcfg["num_res_blocks"], z_channels=vcfg["embed_dim"])
    missing = vae.load_state_dict(vw, strict=False).missing_keys
    assert all(k.startswith(("encoder.", "quant_conv.")) for k in missing), missing
    vae.eval()
    with torch.no_grad():
        tokens, mask = g["tokens"][None].expand(2, -1, -1), g["mask"].float()[None].expand(2, -1)
        emb = model.class_embed_cfg(1, g["class_id"], 2.0)
        out = {"z_cond": model.enc_dec(tokens, mask, emb)[0], "z_uncond": model.enc_dec(tokens, mask, emb)[1]}
        nr, tau = len(g["run_x_T"]), g["temperature"].item()
        model.diffloss.sample_with_inter_noise(
            torch.cat([g["run_z_cond"], g["run_z_uncond"]]), g["run_x_T"].repeat(2, 1),
            g["run_inter_noise"].repeat(2, 1, 1).transpose(0, 1), tau, g["run_cfg_scale"].item())
        man = model.diffloss.gen_diffusion.manager
        out.update(run_x0=man.sample[:nr], run_mu0=man.mean[:nr], run_sigma0=man.variance[:nr] / tau,
                   run_sum_log_sigma=man.log_var[:nr])
        grid = ref.grid_size(mcfg)
        latent = unpatchify(g["tokens"], mcfg["vae_embed_dim"], grid, mcfg["patch_size"])
        out["vae_pixels"] = vae.decode(latent / vcfg["scale_factor"])[0]
    return out


def main():
    """Run the checks; exit status 1 on any failure."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.path.join(HERE, "..", "..", "tests", "data", "mar_tiny"))
    ap.add_argument("--official", help="plain checkout of MarkXCloud/CSpD (optional)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    mcfg, vcfg, mw, vw, g = load(os.path.normpath(args.dir))
    rep = Report()

    t64, s64 = torch_outputs(mcfg, vcfg, mw, vw, g, torch.float64)
    n64 = numpy_outputs(mcfg, vcfg, mw, vw, g)
    print("torch float64 vs NumPy float64 (recomputed):")
    for name in MODEL_OUTPUTS:
        rep.compare(name, t64[name], n64[name], TOL_NUMPY)
    print("torch float64 vs golden (float32 model outputs, float64 schedule):")
    for name in MODEL_OUTPUTS:
        rep.compare(name, t64[name], g[name], TOL_GOLDEN)
    for name in SCHEDULE:
        rep.compare(name, s64[name], g[name], TOL_SCHED)
    rgb = ref.pixels_to_rgb(t64["vae_pixels"].float().numpy())
    rep.check("vae_rgb: MAR's mapping of the float32 pixels equals golden", np.array_equal(rgb, g["vae_rgb"].numpy()))
    print("spec reference values:")
    check_spec_constants(rep, g)

    t32, _ = torch_outputs(mcfg, vcfg, mw, vw, g, torch.float32)
    print("info float32 torch vs golden (max rel diff): " +
          ", ".join(f"{n} {rel_err(t32[n], g[n]):.1e}" for n in MODEL_OUTPUTS))
    if args.official:
        off = official_outputs(os.path.abspath(args.official), mcfg, vcfg, mw, vw, g)
        print("official code (float32, CPU) vs golden:")
        for name, value in off.items():
            rep.compare(f"official {name}", value, g[name], TOL_OFFICIAL)

    print("check_torch_mar: " + ("all passed" if not rep.failures else f"FAILED: {rep.failures}"))
    return 0 if not rep.failures else 1


if __name__ == "__main__":
    sys.exit(main())
