#!/usr/bin/env python3
"""Create the tiny random MAR + DiffLoss + KL-VAE model and golden outputs in tests/data/mar_tiny/.

    .venv/bin/python tools/reference/make_mar_golden.py [--out tests/data/mar_tiny]

Writes config.json ("family": "mar", "mar", "draft" and "vae" sections, schema in
tools/README.md), mar.safetensors, draft.safetensors (a smaller random MAR of the same token
space: the CSpD draft) and vae.safetensors (float32, official tensor names) and golden.safetensors,
whose values come from the NumPy float64 reference mar_ref.py evaluated on the float32 weights and
float32 inputs as stored. The tensors are listed in tests/data/mar_tiny/README.md. Deterministic
(fixed NumPy seed; NumPy and safetensors only).
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tools/, for the converter's tables

import mar_ref as ref  # noqa: E402
from convert_mar import TINY_MAR, TINY_VAE, expected_mar_shapes, expected_vae_shapes  # noqa: E402
from make_golden import f64, save  # noqa: E402

SEED = 20241118
CLASS_ID = 3
NUM_MASKED = 10        # masked positions of the transformer test (of 16)
HEAD_T = [0, 61, 505, 999]  # original timesteps of the one-step head test
HEAD_CFG = 2.5
PMV_STEP = 50          # respaced step of the p_mean_variance test
RUN_TOKENS = 3         # tokens of the full 100-step head run
RUN_CFG = 3.0
TEMPERATURE = 0.9
GEN_ITERS = 4          # generation steps of the end-to-end test (16 tokens: 2, 4, 5, 5)
TEMB_T = [0, 61, 999]
DRAFT_SEED = SEED + 1  # the draft's own stream: the other files do not depend on it
# The CSpD draft: the target's token grid, token width, classes and schedule, narrower and shallower.
TINY_DRAFT = {**TINY_MAR, "file": "draft.safetensors", "encoder_embed_dim": 16, "encoder_depth": 1,
              "encoder_num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2,
              "diffloss_d": 1, "diffloss_w": 24}


def mar_weights(rng, config=TINY_MAR):
    """Random MAR weights of `config`: embeddings and position tables N(0, 1), linears N(0, 1/fan_in),
    biases N(0, 0.1^2), LayerNorm weights 1 + N(0, 0.1^2). The head's last linear is scaled by
    0.3 so that the variance channel v stays mostly inside [-1, 1], as a trained head's does."""
    w = {}
    for name, shape in expected_mar_shapes(config).items():
        if name.endswith(".bias"):
            w[name] = rng.normal(0.0, 0.1, shape)
        elif "norm" in name or "_ln" in name:
            w[name] = 1.0 + rng.normal(0.0, 0.1, shape)
        elif len(shape) == 2 and not name.startswith(("class_emb", "fake_latent")):
            w[name] = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), shape)
        else:
            w[name] = rng.normal(0.0, 1.0, shape)
    w["diffloss.net.final_layer.linear.weight"] *= 0.3
    return {k: v.astype(np.float32) for k, v in w.items()}


def vae_weights(rng):
    """Random VAE decoder weights: convs N(0, 1/fan_in), biases N(0, 0.1^2), GroupNorm weights
    1 + N(0, 0.1^2); conv_out scaled by 0.3 to keep most pixels inside [-1, 1]."""
    w = {}
    for name, shape in expected_vae_shapes(TINY_VAE).items():
        if len(shape) == 4:
            w[name] = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[1:])), shape)
        elif name.endswith(".bias"):
            w[name] = rng.normal(0.0, 0.1, shape)
        else:
            w[name] = 1.0 + rng.normal(0.0, 0.1, shape)
    w["decoder.conv_out.weight"] *= 0.3
    return {k: v.astype(np.float32) for k, v in w.items()}


def f32(rng, *shape):
    """Standard normal float32 inputs (the reference sees exactly these values)."""
    return rng.standard_normal(shape).astype(np.float32)


def make_inputs(rng):
    """All random inputs of the golden tests, float32 / int64."""
    seq, c = ref.grid_size(TINY_MAR) ** 2, ref.token_dim(TINY_MAR)
    k = TINY_MAR["num_sampling_steps"]
    dd = TINY_MAR["decoder_embed_dim"]
    return {
        "order": rng.permutation(seq).astype(np.int64),
        "tokens": f32(rng, seq, c),
        "head_x": f32(rng, len(HEAD_T), c),
        "head_z_cond": f32(rng, len(HEAD_T), dd),
        "head_z_uncond": f32(rng, len(HEAD_T), dd),
        "run_z_cond": f32(rng, RUN_TOKENS, dd),
        "run_z_uncond": f32(rng, RUN_TOKENS, dd),
        "run_x_T": f32(rng, RUN_TOKENS, c),
        "run_inter_noise": f32(rng, RUN_TOKENS, k, c),
        "gen_noise": f32(rng, seq, c),
        "gen_inter_noise": f32(rng, seq, k, c),
    }


def schedule_outputs(sched):
    """Schedule constants (test U1/U2/U3): float64 / int64, straight from mar_ref."""
    out = {f"sched_{n}": sched[n] for n in ("timestep_map", "betas", "alphas_cumprod",
                                              "posterior_log_variance_clipped", "coef1", "coef2")}
    for n in (256, 64, 16):
        out[f"mask_counts_n{n}"] = np.array(ref.tokens_per_step(n, 256), dtype=np.int64)
    out["temb_t"] = np.array(TEMB_T, dtype=np.int64)
    out["temb"] = ref.timestep_embedding(TEMB_T)
    return out


def transformer_outputs(w, inp):
    """Encoder output and head conditions for a partly masked and a fully masked grid."""
    mask = ref.mask_by_order(NUM_MASKED, inp["order"])
    tokens = inp["tokens"].astype(np.float64)
    cls = ref.class_embedding(w, CLASS_ID)
    return {
        "mask": mask.astype(np.uint8),
        "encoder_out_cond": ref.mae_encoder(w, TINY_MAR, tokens, mask, cls),
        "z_cond": ref.enc_dec(w, TINY_MAR, tokens, mask, CLASS_ID),
        "z_uncond": ref.enc_dec(w, TINY_MAR, tokens, mask, None),
        "z_cond_all_masked": ref.enc_dec(w, TINY_MAR, tokens, np.ones(len(mask), dtype=bool), CLASS_ID),
    }


def head_outputs(w, sched, inp):
    """One head call (plain and guided), one p_mean_variance and a full guided 100-step run."""
    x = inp["head_x"].astype(np.float64)
    zc, zu = inp["head_z_cond"].astype(np.float64), inp["head_z_uncond"].astype(np.float64)
    out_cfg = ref.head_forward_cfg(w, TINY_MAR, x, np.array(HEAD_T), zc, zu, HEAD_CFG)
    mean, log_var, x0 = ref.p_mean_variance(sched, PMV_STEP, x, out_cfg)
    run = ref.head_sample(w, TINY_MAR, sched, inp["run_z_cond"].astype(np.float64),
                          inp["run_z_uncond"].astype(np.float64), RUN_CFG, inp["run_x_T"],
                          inp["run_inter_noise"].astype(np.float64), TEMPERATURE)
    return {
        "head_t": np.array(HEAD_T, dtype=np.int64),
        "head_cfg_scale": np.array([HEAD_CFG]),
        "head_out": ref.head_forward(w, TINY_MAR, x, np.array(HEAD_T), zc),
        "head_out_cfg": out_cfg,
        "pmv_step": np.array([PMV_STEP], dtype=np.int64),
        "pmv_mean": mean, "pmv_log_var": log_var, "pmv_x0": x0,
        "run_cfg_scale": np.array([RUN_CFG]), "temperature": np.array([TEMPERATURE]),
        **{f"run_{k}": v for k, v in run.items()},
    }


def generation_outputs(w, sched, inp):
    """End-to-end: GEN_ITERS MAR steps (linear CFG) from the given order and noise."""
    seq = len(inp["order"])
    tokens = ref.sample_tokens(w, TINY_MAR, sched, CLASS_ID, inp["order"], GEN_ITERS, RUN_CFG, "linear",
                               TEMPERATURE, inp["gen_noise"].astype(np.float64),
                               inp["gen_inter_noise"].astype(np.float64))
    mask, lens = np.ones(seq, dtype=bool), []
    for step in range(GEN_ITERS):
        mask, _, mask_len = ref.step_masks(inp["order"], step, GEN_ITERS, mask)
        lens.append(mask_len)
    scales = [ref.cfg_at_step("linear", RUN_CFG, n, seq) for n in lens]
    return {"gen_num_iter": np.array([GEN_ITERS], dtype=np.int64), "gen_mask_len": np.array(lens, dtype=np.int64),
            "gen_cfg_scales": np.array(scales), "gen_tokens": tokens}


def vae_outputs(vw, inp):
    """VAE decode of the input tokens (unpatchify, / scale_factor) and MAR's uint8 mapping."""
    pixels = ref.vae_decode(vw, TINY_VAE, ref.tokens_to_latent(TINY_MAR, TINY_VAE, inp["tokens"]))
    pixels32 = pixels.astype(np.float32)
    scaled = (pixels32.astype(np.float64) + 1.0) / 2.0 * 255.0
    inside = (scaled > 1e-3) & (scaled < 255.0 - 1e-3)
    margin = np.min(np.abs(scaled[inside] - np.floor(scaled[inside]) - 0.5))
    assert margin > 1e-3, f"a pixel lies {margin} from a rounding boundary; change SEED"
    return {"vae_pixels": pixels, "vae_rgb": ref.pixels_to_rgb(pixels32)}, margin


def as_stored(outputs):
    """float64 model outputs are stored as float32; schedule constants (sched_*, temb, scales) stay float64."""
    keep64 = ("sched_", "temb", "head_cfg_scale", "run_cfg_scale", "temperature", "gen_cfg_scales")
    return {k: (v.astype(np.float32) if v.dtype == np.float64 and not k.startswith(keep64) else v)
            for k, v in outputs.items()}


def main():
    """Generate the model and inputs, run the reference, write the files, print a summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "data", "mar_tiny"))
    out = os.path.normpath(ap.parse_args().out)
    os.makedirs(out, exist_ok=True)

    rng = np.random.default_rng(SEED)
    mw, vw = mar_weights(rng), vae_weights(rng)
    inp = make_inputs(rng)
    m64 = f64(mw)
    sched = ref.respaced_schedule(TINY_MAR["num_sampling_steps"], TINY_MAR["diffusion_steps"])
    vae, margin = vae_outputs(f64(vw), inp)
    golden = {**inp, "class_id": np.array([CLASS_ID], dtype=np.int64), **schedule_outputs(sched),
              **transformer_outputs(m64, inp), **head_outputs(m64, sched, inp),
              **generation_outputs(m64, sched, inp), **vae}

    save(mw, os.path.join(out, TINY_MAR["file"]))
    save(mar_weights(np.random.default_rng(DRAFT_SEED), TINY_DRAFT), os.path.join(out, TINY_DRAFT["file"]))
    save(vw, os.path.join(out, TINY_VAE["file"]))
    save(as_stored(golden), os.path.join(out, "golden.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"family": "mar", "mar": TINY_MAR, "draft": TINY_DRAFT, "vae": TINY_VAE}, f, indent=2)
        f.write("\n")

    np.set_printoptions(precision=6, suppress=True, linewidth=120)
    print(f"wrote {out}")
    print("order", inp["order"].tolist(), "mask", golden["mask"].tolist())
    print("z_cond[0][:4]", golden["z_cond"][0, :4], "head_out_cfg v range",
          float(golden["head_out_cfg"][:, 6:].min()), float(golden["head_out_cfg"][:, 6:].max()))
    print("run_x0", golden["run_x0"][0], "sigma0", golden["run_sigma0"][0, :3],
          "sum_log_sigma", golden["run_sum_log_sigma"][0, :3])
    print("gen_mask_len", golden["gen_mask_len"].tolist(), "cfg", golden["gen_cfg_scales"].tolist(),
          "gen_tokens abs max", float(np.abs(golden["gen_tokens"]).max()))
    print("vae_pixels range", float(vae["vae_pixels"].min()), float(vae["vae_pixels"].max()), "margin", float(margin))


if __name__ == "__main__":
    main()
