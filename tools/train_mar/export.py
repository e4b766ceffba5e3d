"""Step 3: export the trained models to weights/demo-mar/ through tools/convert_mar.py, the
converter of the official checkpoints: each model is saved as an official-layout checkpoint
({"model_ema": state dict} for MAR, {"model": state dict} for the VAE, whose encoder the
converter drops) and converted to float16 safetensors with config.json ("mar", "draft", "vae").

usage: python export.py [--out ../../weights/demo-mar] [--target out/target.pt] [--draft out/draft.pt] [--raw]
(--raw: the raw weights, not the EMA)
"""
import argparse
import os
import sys
import tempfile

import torch

from models import HERE, OUT, VAE, mar_section

sys.path.insert(0, os.path.join(HERE, ".."))
import convert_mar  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "weights", "demo-mar"))
    ap.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    ap.add_argument("--target", default=os.path.join(OUT, "target.pt"), help="target checkpoint")
    ap.add_argument("--draft", default=os.path.join(OUT, "draft.pt"), help="draft checkpoint")
    a = ap.parse_args()
    vae = torch.load(os.path.join(OUT, "vae.pt"))
    vae_cfg = dict(VAE, scale_factor=round(vae["scale_factor"], 4))
    key = "model" if a.raw else "model_ema"
    with tempfile.TemporaryDirectory() as tmp:
        decoder = {k.removeprefix("dec."): v for k, v in vae["model"].items()}
        torch.save({"model": decoder}, os.path.join(tmp, "vae.ckpt"))
        for section, name, path in (("mar", "target", a.target), ("draft", "draft", a.draft)):
            ckpt = torch.load(path)
            torch.save({"model_ema": ckpt[key]}, os.path.join(tmp, f"{name}.pth"))
            convert_mar.convert(os.path.join(tmp, f"{name}.pth"), mar_section(name), os.path.join(tmp, "vae.ckpt") if section == "mar" else None,
                                vae_cfg, a.out, section=section, dtype="f16", vae_dtype="f16")


if __name__ == "__main__":
    main()
