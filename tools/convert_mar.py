#!/usr/bin/env python3
"""Convert official MAR checkpoints (checkpoint-last.pth) and the KL-16 VAE (kl16.ckpt) to a spire
weights directory.

    python tools/convert_mar.py --mar-ckpt mar_huge/checkpoint-last.pth --mar-model mar_huge \
        --vae-ckpt kl16.ckpt --out weights/mar-huge [--dtype bf16|f16|f32]
    python tools/convert_mar.py --mar-ckpt mar_base/checkpoint-last.pth --mar-model mar_base \
        --section draft --out weights/mar-huge          # add a draft model to the same directory

    python tools/convert_mar.py --selftest

Writes DIR/mar.safetensors (or DIR/draft.safetensors with --section draft), DIR/vae.safetensors
and DIR/config.json ("family": "mar" with "mar", "draft" and "vae" sections; schema in
tools/README.md). Tensor names stay the official ones (spec §1.6, §1.7 of
shared/notes/continuous-sd-spec.md). The MAR state dict is taken from "model_ema" (the weights
the official evaluation uses; --ckpt-key model for the raw weights); the VAE's from "model", of
which only post_quant_conv and decoder are kept (encoder, quant_conv and loss.* are dropped).
Every expected tensor must be present with the expected shape; anything else left over is an
error (--allow-extra drops it with a warning instead).

Loading is torch.load(weights_only=True) with argparse.Namespace allowed (training checkpoints
carry their "args"); --allow-pickle falls back to full unpickling for trusted files.
"""

import argparse
import json
import math
import os
import sys
import tempfile

from convert_llamagen import (DTYPES, ConversionError, SelfTest, add_common_args, load_checkpoint,
                              save_safetensors, select_tensors, unwrap_state_dict)

# name: (depth, width, heads, diffloss_d, diffloss_w), as models/mar.py mar_base/large/huge and
# the diffloss sizes of the released checkpoints (MAR README). Encoder and decoder are alike.
MAR_PRESETS = {
    "mar_base": (12, 768, 12, 6, 1024),
    "mar_large": (16, 1024, 16, 8, 1280),
    "mar_huge": (20, 1280, 16, 12, 1536),
}

# Parameter counts in millions from the MAR README (checked by --selftest to within 1M).
README_PARAMS_M = {"mar_base": 208, "mar_large": 479, "mar_huge": 943}

MAR_KEYS = ["file", "img_size", "vae_stride", "patch_size", "vae_embed_dim", "encoder_embed_dim",
            "encoder_depth", "encoder_num_heads", "decoder_embed_dim", "decoder_depth",
            "decoder_num_heads", "mlp_ratio", "norm_eps", "class_num", "buffer_size", "diffloss_d",
            "diffloss_w", "num_sampling_steps", "diffusion_steps", "noise_schedule"]
VAE_KEYS = ["file", "embed_dim", "ch", "ch_mult", "num_res_blocks", "out_ch", "norm_groups",
            "scale_factor"]
SECTIONS = ("mar", "draft")
MODEL_OPTS = ("--mar-model", "--img-size")


def mar_config(model, img_size=256, class_num=1000, num_sampling_steps=100, section="mar"):
    """The "mar" (or "draft") config section of a released MAR model."""
    if model not in MAR_PRESETS:
        raise ConversionError(f"unknown --mar-model {model!r}; choose one of {', '.join(MAR_PRESETS)}")
    if img_size % 16:
        raise ConversionError(f"--img-size {img_size} is not a multiple of the VAE stride 16")
    depth, width, heads, d, w = MAR_PRESETS[model]
    return {"file": f"{section}.safetensors", "img_size": img_size, "vae_stride": 16, "patch_size": 1,
            "vae_embed_dim": 16, "encoder_embed_dim": width, "encoder_depth": depth,
            "encoder_num_heads": heads, "decoder_embed_dim": width, "decoder_depth": depth,
            "decoder_num_heads": heads, "mlp_ratio": 4.0, "norm_eps": 1e-6, "class_num": class_num,
            "buffer_size": 64, "diffloss_d": d, "diffloss_w": w,
            "num_sampling_steps": num_sampling_steps, "diffusion_steps": 1000, "noise_schedule": "cosine"}


def vae_config():
    """The "vae" config section of the KL-16 VAE (AutoencoderKL(embed_dim=16, ch_mult=(1,1,2,2,4)))."""
    return {"file": "vae.safetensors", "embed_dim": 16, "ch": 128, "ch_mult": [1, 1, 2, 2, 4],
            "num_res_blocks": 2, "out_ch": 3, "norm_groups": 32, "scale_factor": 0.2325}


def _linear(shapes, name, n_in, n_out):
    """Record an nn.Linear with bias ([out, in] weight)."""
    shapes[name + ".weight"] = (n_out, n_in)
    shapes[name + ".bias"] = (n_out,)


def _norm(shapes, name, c):
    """Record an affine LayerNorm / GroupNorm."""
    shapes[name + ".weight"] = (c,)
    shapes[name + ".bias"] = (c,)


def _vit_blocks(shapes, prefix, depth, d, mlp_ratio):
    """Record `depth` timm Blocks (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""
    hidden = int(d * mlp_ratio)
    for i in range(depth):
        p = f"{prefix}.{i}."
        _norm(shapes, p + "norm1", d)
        _linear(shapes, p + "attn.qkv", d, 3 * d)
        _linear(shapes, p + "attn.proj", d, d)
        _norm(shapes, p + "norm2", d)
        _linear(shapes, p + "mlp.fc1", d, hidden)
        _linear(shapes, p + "mlp.fc2", hidden, d)


def _diffloss(shapes, cfg):
    """Record DiffLoss's SimpleMLPAdaLN (spec §1.5): out channels 2C (learned variance)."""
    w, c, dd = cfg["diffloss_w"], cfg["vae_embed_dim"] * cfg["patch_size"] ** 2, cfg["decoder_embed_dim"]
    p = "diffloss.net."
    _linear(shapes, p + "time_embed.mlp.0", 256, w)
    _linear(shapes, p + "time_embed.mlp.2", w, w)
    _linear(shapes, p + "cond_embed", dd, w)
    _linear(shapes, p + "input_proj", c, w)
    for j in range(cfg["diffloss_d"]):
        r = f"{p}res_blocks.{j}."
        _norm(shapes, r + "in_ln", w)
        _linear(shapes, r + "mlp.0", w, w)
        _linear(shapes, r + "mlp.2", w, w)
        _linear(shapes, r + "adaLN_modulation.1", w, 3 * w)
    _linear(shapes, p + "final_layer.adaLN_modulation.1", w, 2 * w)
    _linear(shapes, p + "final_layer.linear", w, 2 * c)


def expected_mar_shapes(cfg):
    """{official tensor name: shape} of a MAR model with its DiffLoss head (spec §1.6)."""
    de, dd = cfg["encoder_embed_dim"], cfg["decoder_embed_dim"]
    seq = (cfg["img_size"] // cfg["vae_stride"] // cfg["patch_size"]) ** 2
    c = cfg["vae_embed_dim"] * cfg["patch_size"] ** 2
    shapes = {"class_emb.weight": (cfg["class_num"], de), "fake_latent": (1, de)}
    _linear(shapes, "z_proj", c, de)
    _norm(shapes, "z_proj_ln", de)
    shapes["encoder_pos_embed_learned"] = (1, seq + cfg["buffer_size"], de)
    _vit_blocks(shapes, "encoder_blocks", cfg["encoder_depth"], de, cfg["mlp_ratio"])
    _norm(shapes, "encoder_norm", de)
    _linear(shapes, "decoder_embed", de, dd)
    shapes["mask_token"] = (1, 1, dd)
    shapes["decoder_pos_embed_learned"] = (1, seq + cfg["buffer_size"], dd)
    _vit_blocks(shapes, "decoder_blocks", cfg["decoder_depth"], dd, cfg["mlp_ratio"])
    _norm(shapes, "decoder_norm", dd)
    shapes["diffusion_pos_embed_learned"] = (1, seq, dd)
    _diffloss(shapes, cfg)
    return shapes


def expected_vae_shapes(cfg):
    """{official tensor name: shape} of the decoding half of the KL VAE (spec §1.7)."""
    shapes = {}

    def conv(name, cin, cout, k):
        shapes[name + ".weight"] = (cout, cin, k, k)
        shapes[name + ".bias"] = (cout,)

    def res(prefix, cin, cout):
        _norm(shapes, prefix + "norm1", cin)
        conv(prefix + "conv1", cin, cout, 3)
        _norm(shapes, prefix + "norm2", cout)
        conv(prefix + "conv2", cout, cout, 3)
        if cin != cout:
            conv(prefix + "nin_shortcut", cin, cout, 1)

    ch, mult, e = cfg["ch"], cfg["ch_mult"], cfg["embed_dim"]
    conv("post_quant_conv", e, e, 1)
    block_in = ch * mult[-1]
    conv("decoder.conv_in", e, block_in, 3)
    res("decoder.mid.block_1.", block_in, block_in)
    _norm(shapes, "decoder.mid.attn_1.norm", block_in)
    for n in ("q", "k", "v", "proj_out"):
        conv("decoder.mid.attn_1." + n, block_in, block_in, 1)
    res("decoder.mid.block_2.", block_in, block_in)
    for i in reversed(range(len(mult))):
        for j in range(cfg["num_res_blocks"] + 1):
            res(f"decoder.up.{i}.block.{j}.", block_in, ch * mult[i])
            block_in = ch * mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    _norm(shapes, "decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, cfg["out_ch"], 3)
    return shapes


def _is_junk_mar(name):
    """MAR checkpoints hold parameters only (the diffusion schedules are NumPy arrays): no junk."""
    return False


def _is_junk_vae(name):
    """Parts of the KL VAE checkpoint that decoding does not use."""
    return name.startswith(("encoder.", "quant_conv.", "loss."))


def write_config(out_dir, sections):
    """Write config.json with "family": "mar" and the given sections, keeping the other sections
    already there (a target's "mar" when a "draft" is added, and the reverse)."""
    path = os.path.join(out_dir, "config.json")
    config = {}
    if os.path.exists(path):
        with open(path) as f:
            config = json.load(f)
        if config.get("family", "llamagen") != "mar":
            raise ConversionError(f"{path} belongs to a {config.get('family', 'llamagen')} model; use another --out")
    config["family"] = "mar"
    config.update(sections)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return path


def _convert_one(ckpt, key, expected, is_junk, what, out_path, dtype, opts, log):
    """Load ckpt[key], check it against expected, write out_path; returns the tensor count."""
    log(f"loading {ckpt}")
    sd = unwrap_state_dict(load_checkpoint(ckpt, opts["allow_pickle"]), ckpt, key)
    tensors = select_tensors(sd, expected, is_junk, what, ckpt, opts["allow_extra"], MODEL_OPTS)
    save_safetensors(tensors, out_path, dtype, ckpt, tool="convert_mar.py")
    log(f"wrote {out_path}: {len(tensors)} tensors, "
        f"{sum(t.numel() for t in tensors.values()) / 1e6:.1f}M params, {dtype}")
    return len(tensors)


def convert(mar_ckpt, mar_cfg, vae_ckpt, vae_cfg, out_dir, section="mar", dtype="f32", vae_dtype="f32",
            ckpt_key="model_ema", allow_pickle=False, allow_extra=False, quiet=False):
    """Convert a MAR checkpoint (into section, "mar" or "draft") and optionally the VAE into out_dir."""
    if section not in SECTIONS:
        raise ConversionError(f"--section must be one of {SECTIONS}, not {section!r}")
    os.makedirs(out_dir, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    opts = {"allow_pickle": allow_pickle, "allow_extra": allow_extra}
    sections = {}
    if mar_ckpt is not None:
        _convert_one(mar_ckpt, ckpt_key, expected_mar_shapes(mar_cfg), _is_junk_mar, "MAR",
                     os.path.join(out_dir, mar_cfg["file"]), dtype, opts, log)
        sections[section] = {k: mar_cfg[k] for k in MAR_KEYS}
    if vae_ckpt is not None:
        _convert_one(vae_ckpt, "model", expected_vae_shapes(vae_cfg), _is_junk_vae, "VAE",
                     os.path.join(out_dir, vae_cfg["file"]), vae_dtype, opts, log)
        sections["vae"] = {k: vae_cfg[k] for k in VAE_KEYS}
    log(f"wrote {write_config(out_dir, sections)}")


# ---------------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------------

TINY_MAR = {"file": "mar.safetensors", "img_size": 64, "vae_stride": 16, "patch_size": 1,
            "vae_embed_dim": 6, "encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 4,
            "decoder_embed_dim": 24, "decoder_depth": 2, "decoder_num_heads": 3, "mlp_ratio": 4.0,
            "norm_eps": 1e-6, "class_num": 10, "buffer_size": 5, "diffloss_d": 2, "diffloss_w": 40,
            "num_sampling_steps": 100, "diffusion_steps": 1000, "noise_schedule": "cosine"}
TINY_VAE = {"file": "vae.safetensors", "embed_dim": 6, "ch": 8, "ch_mult": [1, 2, 2],
            "num_res_blocks": 1, "out_ch": 3, "norm_groups": 4, "scale_factor": 0.2325}


def _official_state_dicts(seed):
    """Random tiny state dicts in the official layout, named by the PyTorch modules of
    reference/mar_torch.py (which mirror models/mar.py, models/diffloss.py and models/vae.py),
    so the name tables above are checked against a module structure, not against themselves.
    The VAE dict carries an encoder, quant_conv and loss.* tensors as the real kl16.ckpt may."""
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    import mar_torch

    torch.manual_seed(seed)
    mar = {k: torch.randn(v.shape) for k, v in mar_torch.MAR(TINY_MAR).state_dict().items()}
    vae = {k: torch.randn(v.shape) for k, v in mar_torch.VAEDecoder(TINY_VAE).state_dict().items()}
    junk = {"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3), "quant_conv.weight": torch.zeros(12, 12, 1, 1),
            "loss.logvar": torch.zeros(())}
    return mar, vae, junk


def selftest():
    """Check the preset table, convert tiny fake checkpoints, compare everything, check the errors."""
    import torch
    from safetensors.torch import load_file

    check = SelfTest()

    for name, want in README_PARAMS_M.items():
        n = sum(math.prod(s) for s in expected_mar_shapes(mar_config(name)).values()) / 1e6
        check(abs(n - want) <= 1.0, f"{name}: {n:.1f}M parameters, README says {want}M")
    big = expected_vae_shapes(vae_config())
    check(big["decoder.up.3.block.0.nin_shortcut.weight"] == (256, 512, 1, 1), "KL-16: up.3.block.0 512->256 shortcut")
    check(big["decoder.mid.attn_1.q.weight"] == (512, 512, 1, 1), "KL-16: mid.attn_1.q [512, 512, 1, 1]")
    check(big["decoder.conv_out.weight"] == (3, 128, 3, 3), "KL-16: conv_out [3, 128, 3, 3]")
    check("decoder.up.1.upsample.conv.weight" in big and "decoder.up.0.upsample.conv.weight" not in big,
          "KL-16: 4 upsamplings (x16)")

    mar, vae, junk = _official_state_dicts(0)
    check(sorted(mar) == sorted(expected_mar_shapes(TINY_MAR)), "MAR name table == official module structure")
    check(all(tuple(mar[k].shape) == s for k, s in expected_mar_shapes(TINY_MAR).items()), "MAR shapes")
    check(sorted(vae) == sorted(expected_vae_shapes(TINY_VAE)), "VAE name table == official module structure")
    check(all(tuple(vae[k].shape) == s for k, s in expected_vae_shapes(TINY_VAE).items()), "VAE shapes")

    with tempfile.TemporaryDirectory() as tmp:
        def path(n):
            return os.path.join(tmp, n)

        import argparse as _argparse
        raw = {k: torch.zeros_like(v) for k, v in mar.items()}  # "model" must not be taken
        torch.save({"model": raw, "model_ema": {"module." + k: v for k, v in mar.items()}, "epoch": 399,
                    "optimizer": {"state": {}}, "scaler": {"scale": 65536.0},
                    "args": _argparse.Namespace(model="tiny")}, path("ckpt.pth"))
        torch.save({"model": {**vae, **junk}}, path("kl.ckpt"))
        out = path("out")
        convert(path("ckpt.pth"), TINY_MAR, path("kl.ckpt"), TINY_VAE, out, quiet=True)
        got_m = load_file(os.path.join(out, "mar.safetensors"))
        got_v = load_file(os.path.join(out, "vae.safetensors"))
        check(sorted(got_m) == sorted(mar) and all(torch.equal(got_m[k], mar[k]) for k in mar),
              "MAR: model_ema taken, prefixes stripped, values bit-exact (f32)")
        check(sorted(got_v) == sorted(vae) and all(torch.equal(got_v[k], vae[k]) for k in vae),
              "VAE: encoder/quant_conv/loss dropped, values bit-exact (f32)")
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        check(cfg == {"family": "mar", "mar": TINY_MAR, "vae": TINY_VAE}, "config.json: family, mar, vae")

        draft_cfg = dict(TINY_MAR, file="draft.safetensors", encoder_depth=1, decoder_depth=1)
        draft = {k: v for k, v in mar.items() if not k.startswith(("encoder_blocks.1.", "decoder_blocks.1."))}
        torch.save({"model_ema": draft}, path("draft.pth"))
        convert(path("draft.pth"), draft_cfg, None, None, out, section="draft", dtype="bf16", quiet=True)
        got_d = load_file(os.path.join(out, "draft.safetensors"))
        check(all(got_d[k].dtype == torch.bfloat16 and torch.equal(got_d[k], draft[k].bfloat16()) for k in draft),
              "--section draft, bf16 output")
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        check(cfg["mar"] == TINY_MAR and cfg["draft"] == draft_cfg and cfg["vae"] == TINY_VAE,
              "config.json: draft added, mar and vae kept")

        def expect_error(sd, needle, what, key="model_ema", **kw):
            torch.save({key: sd}, path("bad.pth"))
            try:
                convert(path("bad.pth"), TINY_MAR, None, None, path("out_bad"), quiet=True, **kw)
            except ConversionError as e:
                check(needle in str(e), f"{what}: error names {needle!r}")
                return
            check(False, f"{what}: no error raised")

        expect_error({k: v for k, v in mar.items() if k != "diffloss.net.res_blocks.1.in_ln.bias"},
                     "diffloss.net.res_blocks.1.in_ln.bias", "missing tensor")
        expect_error(dict(mar, mask_token=torch.zeros(1, 1, 32)), "'mask_token' has shape [1, 1, 32], expected [1, 1, 24]",
                     "mis-shaped tensor")
        expect_error(dict(mar, **{"encoder_blocks.2.norm1.weight": torch.zeros(32)}), "encoder_blocks.2.norm1.weight",
                     "unexpected tensor")
        expect_error(mar, "no key 'model_ema'", "checkpoint without EMA weights", key="model")
        torch.save({"model_ema": None}, path("none.pth"))
        try:
            convert(path("none.pth"), TINY_MAR, None, None, path("out_none"), quiet=True)
            check(False, "model_ema None refused")
        except ConversionError as e:
            check("not a state dict" in str(e), "model_ema None refused")
        torch.save({"model_ema": dict(mar, extra=torch.zeros(1))}, path("extra.pth"))
        convert(path("extra.pth"), TINY_MAR, None, None, path("out_extra"), allow_extra=True, quiet=True)
        check(sorted(load_file(os.path.join(path("out_extra"), "mar.safetensors"))) == sorted(mar),
              "--allow-extra drops unexpected tensors")
        os.makedirs(path("lg"))
        with open(os.path.join(path("lg"), "config.json"), "w") as f:
            json.dump({"gpt": {}}, f)
        try:
            convert(None, None, path("kl.ckpt"), TINY_VAE, path("lg"), quiet=True)
            check(False, "refuses to mix into a LlamaGen directory")
        except ConversionError as e:
            check("llamagen" in str(e), "refuses to mix into a LlamaGen directory")

    return check.summary()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mar-ckpt", help="official MAR checkpoint-last.pth")
    ap.add_argument("--mar-model", choices=list(MAR_PRESETS), help="official model size")
    ap.add_argument("--section", choices=SECTIONS, default="mar",
                    help="config section (and file name) for this MAR model: the target (mar) or a draft")
    ap.add_argument("--vae-ckpt", help="KL-16 VAE kl16.ckpt (optional)")
    ap.add_argument("--out", help="output weights directory")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--class-num", type=int, default=1000)
    ap.add_argument("--num-sampling-steps", type=int, default=100, help="respaced diffusion steps (default 100)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="f32", help="MAR weight dtype (default f32)")
    ap.add_argument("--vae-dtype", choices=list(DTYPES), default="f32", help="VAE weight dtype (default f32)")
    ap.add_argument("--ckpt-key", default="model_ema", help="state dict key of the MAR checkpoint (default model_ema)")
    add_common_args(ap)
    args = ap.parse_args(argv)

    if args.selftest:
        return selftest()
    if args.out is None or (args.mar_ckpt is None and args.vae_ckpt is None):
        ap.error("--out and at least one of --mar-ckpt / --vae-ckpt are required (or use --selftest)")
    if args.mar_ckpt is not None and args.mar_model is None:
        ap.error("--mar-model is required with --mar-ckpt")
    try:
        mcfg = None
        if args.mar_ckpt is not None:
            mcfg = mar_config(args.mar_model, args.img_size, args.class_num, args.num_sampling_steps, args.section)
        convert(args.mar_ckpt, mcfg, args.vae_ckpt, vae_config(), args.out, args.section, args.dtype,
                args.vae_dtype, args.ckpt_key, args.allow_pickle, args.allow_extra)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
