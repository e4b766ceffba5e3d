"""Step 4: golden outputs of the shipped weights, weights/demo-mar/golden.safetensors, computed
by the NumPy float64 reference (tools/reference/mar_ref.py) on the float16 weights as stored.
tests/demo_mar_weights.rs compares spire against them.

Inputs: the scaled posterior mean of validation image 0 as tokens ([64, 16]), with the first
half of a fixed random order masked, its class; 4 tokens for a head step. Outputs:
- z_cond, z_uncond: the target's head conditions at every position (both branches);
- draft_z_cond: the same for the draft's conditional branch;
- head_out_cfg: one guided target-head call (scale HEAD_CFG) on head_x at timesteps HEAD_T with
  the conditions of positions 0..3 (z_cond / z_uncond);
- vae_pixels: the VAE decode of the tokens ([3, 32, 32], before the uint8 mapping).

usage: python export_golden.py [--dir ../../weights/demo-mar]
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

from models import HERE, OUT

sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import mar_ref as ref  # noqa: E402
from make_golden import save  # noqa: E402  (tools/reference/make_golden.py)

HEAD_T = [0, 61, 505, 999]
HEAD_CFG = 3.0


def weights(path):
    """The float16 weights as float64."""
    return {k: v.astype(np.float64) for k, v in load_file(path).items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(HERE, "..", "..", "weights", "demo-mar"))
    d = ap.parse_args().dir
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    mar, vae = cfg["mar"], cfg["vae"]
    lat = np.load(os.path.join(OUT, "latents.npz"))
    latent = lat["val_mean"][0].astype(np.float64) * vae["scale_factor"]
    tokens = latent.transpose(1, 2, 0).reshape(-1, mar["vae_embed_dim"]).astype(np.float32)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(tokens))
    mask = ref.mask_by_order(len(tokens) // 2, order)
    label = int(lat["val_y"][0])
    head_x = rng.standard_normal((len(HEAD_T), tokens.shape[1])).astype(np.float32)
    t64 = tokens.astype(np.float64)
    tw = weights(os.path.join(d, mar["file"]))
    z_cond = ref.enc_dec(tw, mar, t64, mask, label)
    z_uncond = ref.enc_dec(tw, mar, t64, mask, None)
    golden = {"tokens": tokens, "mask": mask.astype(np.uint8), "class_id": np.array([label], dtype=np.int64),
              "z_cond": z_cond, "z_uncond": z_uncond, "head_x": head_x, "head_t": np.array(HEAD_T, dtype=np.int64),
              "head_cfg_scale": np.array([HEAD_CFG]),
              "head_out_cfg": ref.head_forward_cfg(tw, mar, head_x.astype(np.float64), np.array(HEAD_T),
                                                   z_cond[:len(HEAD_T)], z_uncond[:len(HEAD_T)], HEAD_CFG)}
    if "draft" in cfg:
        golden["draft_z_cond"] = ref.enc_dec(weights(os.path.join(d, cfg["draft"]["file"])), cfg["draft"], t64, mask, label)
    vw = weights(os.path.join(d, vae["file"]))
    golden["vae_pixels"] = ref.vae_decode(vw, vae, ref.tokens_to_latent(mar, vae, t64))
    stored = {k: (v.astype(np.float32) if v.dtype == np.float64 and k != "head_cfg_scale" else v) for k, v in golden.items()}
    save(stored, os.path.join(d, "golden.safetensors"))
    print(f"wrote {os.path.join(d, 'golden.safetensors')}: class {label}, {int(mask.sum())} masked; "
          f"z_cond max {np.abs(z_cond).max():.3f}, pixels in [{golden['vae_pixels'].min():.3f}, {golden['vae_pixels'].max():.3f}]")


if __name__ == "__main__":
    main()
