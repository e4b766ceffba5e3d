#!/usr/bin/env python3
"""Create the tiny random LlamaGen-style model and golden outputs in tests/data/tiny/.

    /work/venv/bin/python tools/reference/make_golden.py [--out tests/data/tiny]

Writes config.json ("gpt" and "vq" sections, docs/ARCHITECTURE.md), gpt.safetensors and
vq.safetensors (float32, official LlamaGen tensor names) and golden.safetensors, whose values come
from the NumPy float64 reference in llamagen_ref.py evaluated on the float32 weights as stored:

  tokens       int64   [16]        an image token sequence (a 4x4 grid, row-major)
  class_id     int64   [1]         the class used for the conditional pass
  logits_cond  float32 [17, 64]    logits at positions 0..16 for [class_id, tokens[0..16]]
  logits_null  float32 [17, 64]    the same with the null class (num_classes)
  cfg_scale    float32 [1]         a guidance scale (2.0)
  logits_cfg   float32 [17, 64]    logits_null + (logits_cond - logits_null) * cfg_scale
  hidden_cond  float32 [17, 32]    last-layer hidden state before the final norm, conditional pass
  vq_pixels    float32 [3, 8, 8]   VQ decoder output for tokens (before the pixel mapping)
  vq_rgb       uint8   [8, 8, 3]   clamp(127.5 * vq_pixels + 128, 0, 255) truncated

The whole thing is deterministic (fixed NumPy seed; NumPy only, no torch).
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tools/, for the converter's name/shape tables

import llamagen_ref as ref  # noqa: E402
from convert_llamagen import expected_gpt_shapes, expected_vq_shapes  # noqa: E402

SEED = 20240607

GPT = {"file": "gpt.safetensors", "dim": 32, "n_layer": 2, "n_head": 4, "vocab_size": 64,
       "num_classes": 5, "cls_token_num": 1, "block_size": 16, "rope_base": 10000.0,
       "norm_eps": 1e-5, "multiple_of": 32, "ffn_dim_multiplier": None}
VQ = {"file": "vq.safetensors", "codebook_size": 64, "codebook_embed_dim": 4,
      "codebook_l2_norm": True, "z_channels": 16, "ch": 8, "ch_mult": [1, 2],
      "num_res_blocks": 1, "out_channels": 3, "norm_groups": 4}
CLASS_ID = 3
CFG_SCALE = 2.0


def gpt_weights(rng):
    """Random GPT weights: embeddings N(0, 1), linears N(0, (1.5 / sqrt(fan_in))^2), norms 1 + N(0, 0.1^2)."""
    w = {}
    for name, shape in expected_gpt_shapes(GPT).items():
        if "embedding" in name:
            w[name] = rng.normal(0.0, 1.0, shape)
        elif name.endswith("norm.weight"):
            w[name] = 1.0 + rng.normal(0.0, 0.1, shape)
        else:
            w[name] = rng.normal(0.0, 1.5 / np.sqrt(shape[1]), shape)
    return {k: v.astype(np.float32) for k, v in w.items()}


def vq_weights(rng):
    """Random VQ decoder weights: codebook N(0, 1) (deliberately not unit-norm), convs
    N(0, 1/fan_in), biases N(0, 0.1^2), GroupNorm weights 1 + N(0, 0.1^2)."""
    w = {}
    for name, shape in expected_vq_shapes(VQ).items():
        if name == "quantize.embedding.weight":
            w[name] = rng.normal(0.0, 1.0, shape)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            w[name] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        elif name.endswith(".bias"):
            w[name] = rng.normal(0.0, 0.1, shape)
        else:  # GroupNorm weight
            w[name] = 1.0 + rng.normal(0.0, 0.1, shape)
    return {k: v.astype(np.float32) for k, v in w.items()}


def save(tensors, path):
    """save_file with C-contiguous arrays (safetensors.numpy writes the raw buffer, ignoring
    strides, so a transposed view would be stored scrambled) and 0644 permissions."""
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)
    os.chmod(path, 0o644)


def f64(w):
    """Float64 copies of float32 weights (the reference runs on exactly the stored values)."""
    return {k: v.astype(np.float64) for k, v in w.items()}


def main():
    """Generate the model, run the reference, write the files, print a summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "data", "tiny"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)

    rng = np.random.default_rng(SEED)
    gw = gpt_weights(rng)
    vw = vq_weights(rng)
    tokens = rng.integers(0, GPT["vocab_size"], size=GPT["block_size"]).astype(np.int64)

    g64, v64 = f64(gw), f64(vw)
    logits_cond, hidden_cond = ref.gpt_forward(g64, GPT, CLASS_ID, tokens, return_hidden=True)
    logits_null = ref.gpt_forward(g64, GPT, GPT["num_classes"], tokens)
    logits_cfg = ref.cfg_mix(logits_cond, logits_null, CFG_SCALE)
    grid = int(round(GPT["block_size"] ** 0.5))
    pixels = ref.vq_decode(v64, VQ, tokens, grid, grid).astype(np.float32)
    rgb = ref.pixels_to_rgb(pixels)

    # The u8 mapping must not depend on float rounding: every unclamped value must sit well away
    # from an integer boundary.
    mapped = 127.5 * pixels.astype(np.float64) + 128.0
    inside = (mapped > 1e-3) & (mapped < 255.0 - 1e-3)
    margin = np.min(np.abs(mapped[inside] - np.round(mapped[inside])))
    assert margin > 1e-3, f"pixel {margin} too close to an integer boundary; change SEED"

    save(gw, os.path.join(out, "gpt.safetensors"))
    save(vw, os.path.join(out, "vq.safetensors"))
    save({
        "tokens": tokens,
        "class_id": np.array([CLASS_ID], dtype=np.int64),
        "logits_cond": logits_cond.astype(np.float32),
        "logits_null": logits_null.astype(np.float32),
        "cfg_scale": np.array([CFG_SCALE], dtype=np.float32),
        "logits_cfg": logits_cfg.astype(np.float32),
        "hidden_cond": hidden_cond.astype(np.float32),
        "vq_pixels": pixels,
        "vq_rgb": rgb,
    }, os.path.join(out, "golden.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"gpt": GPT, "vq": VQ}, f, indent=2)
        f.write("\n")

    np.set_printoptions(precision=6, suppress=True, linewidth=120)
    print(f"wrote {out}: ffn hidden {ref.ffn_hidden(GPT)}, image {pixels.shape}")
    print("tokens", tokens.tolist(), "class_id", CLASS_ID)
    print("logits_cond[0][:4]", logits_cond[0, :4].astype(np.float32))
    print("logits_cond[5][:4]", logits_cond[5, :4].astype(np.float32))
    print("logits_null[0][:4]", logits_null[0, :4].astype(np.float32))
    print("logits_cfg[5][:4]", logits_cfg[5, :4].astype(np.float32))
    print("logits_cond std", float(logits_cond.std()), "argmax per position", logits_cond.argmax(-1).tolist())
    print("vq_pixels[0][0][:4]", pixels[0, 0, :4])
    print("vq_pixels range", float(pixels.min()), float(pixels.max()),
          "clamped low/high", int((mapped <= 0).sum()), int((mapped >= 255).sum()), "margin", float(margin))
    print("vq_rgb[0][0]", rgb[0, 0].tolist())


if __name__ == "__main__":
    main()
