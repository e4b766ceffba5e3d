#!/usr/bin/env python3
"""Convert official LlamaGen class-conditional checkpoints (.pt) to a spire weights directory.

    python tools/convert_llamagen.py \
        --gpt-ckpt c2i_XL_384.pt --gpt-model GPT-XL --image-size 384 \
        --vq-ckpt vq_ds16_c2i.pt --out weights/llamagen-xl-384 [--dtype bf16|f16|f32]

    python tools/convert_llamagen.py --selftest

Writes DIR/gpt.safetensors, DIR/vq.safetensors and DIR/config.json ("gpt" and "vq" sections, see
docs/ARCHITECTURE.md). Tensor names stay the official ones. Non-weights are dropped (RoPE tables,
causal masks, KV caches, the VQ's codebook_used counter, the VQ encoder and quant_conv). Every
expected tensor must be present with the expected shape; anything else left over is an error
(--allow-extra drops it with a warning instead).

Checkpoints are read with torch.load(weights_only=True), with argparse.Namespace allowed (official
training checkpoints carry their "args"); --allow-pickle falls back to full unpickling, which runs
code from the file: use it only for files you trust.
"""

import argparse
import json
import os
import sys
import tempfile

# ---------------------------------------------------------------------------------------------
# Official configurations
# ---------------------------------------------------------------------------------------------

# name: (n_layer, n_head, dim), as in LlamaGen's autoregressive/models/gpt.py
GPT_PRESETS = {
    "GPT-B": (12, 12, 768),
    "GPT-L": (24, 16, 1024),
    "GPT-XL": (36, 20, 1280),
    "GPT-XXL": (48, 24, 1536),
    "GPT-3B": (24, 32, 3200),
}

# FFN hidden sizes the official formula must give for the presets (checked by --selftest).
EXPECTED_FFN_HIDDEN = {"GPT-B": 2048, "GPT-L": 2816, "GPT-XL": 3584, "GPT-XXL": 4096, "GPT-3B": 8704}

# downsample factor: decoder channel multipliers (LlamaGen VQ_16 / VQ_8)
VQ_CH_MULT = {16: [1, 1, 2, 2, 4], 8: [1, 2, 2, 4]}

GPT_KEYS = ["file", "dim", "n_layer", "n_head", "vocab_size", "num_classes", "cls_token_num",
            "block_size", "rope_base", "norm_eps", "multiple_of", "ffn_dim_multiplier"]
VQ_KEYS = ["file", "codebook_size", "codebook_embed_dim", "codebook_l2_norm", "z_channels", "ch",
           "ch_mult", "num_res_blocks", "out_channels", "norm_groups"]


class ConversionError(Exception):
    """A checkpoint does not match the expected architecture."""


def find_multiple(n, k):
    """Round n up to a multiple of k (LlamaGen's find_multiple)."""
    return n if n % k == 0 else n + k - (n % k)


def ffn_hidden(cfg):
    """SwiGLU hidden width exactly as LlamaGen's FeedForward derives it."""
    hidden = int(2 * (4 * cfg["dim"]) / 3)
    if cfg.get("ffn_dim_multiplier") is not None:
        hidden = int(cfg["ffn_dim_multiplier"] * hidden)
    return find_multiple(hidden, cfg["multiple_of"])


def gpt_config(model, image_size, downsample=16, vocab_size=16384, num_classes=1000):
    """The "gpt" config section of an official class-conditional model."""
    if model not in GPT_PRESETS:
        raise ConversionError(f"unknown --gpt-model {model!r}; choose one of {', '.join(GPT_PRESETS)}")
    if image_size % downsample:
        raise ConversionError(f"--image-size {image_size} is not a multiple of --downsample {downsample}")
    n_layer, n_head, dim = GPT_PRESETS[model]
    grid = image_size // downsample
    return {"file": "gpt.safetensors", "dim": dim, "n_layer": n_layer, "n_head": n_head,
            "vocab_size": vocab_size, "num_classes": num_classes, "cls_token_num": 1,
            "block_size": grid * grid, "rope_base": 10000.0, "norm_eps": 1e-5, "multiple_of": 256,
            "ffn_dim_multiplier": None}


def vq_config(downsample=16, codebook_size=16384, codebook_embed_dim=8):
    """The "vq" config section of the official VQ-16 (or VQ-8) tokenizer."""
    if downsample not in VQ_CH_MULT:
        raise ConversionError(f"--downsample must be 16 or 8, not {downsample}")
    return {"file": "vq.safetensors", "codebook_size": codebook_size,
            "codebook_embed_dim": codebook_embed_dim, "codebook_l2_norm": True, "z_channels": 256,
            "ch": 128, "ch_mult": list(VQ_CH_MULT[downsample]), "num_res_blocks": 2,
            "out_channels": 3, "norm_groups": 32}


def expected_gpt_shapes(cfg):
    """{official tensor name: shape} of a class-conditional LlamaGen GPT."""
    d, hid = cfg["dim"], ffn_hidden(cfg)
    shapes = {
        "tok_embeddings.weight": (cfg["vocab_size"], d),
        "cls_embedding.embedding_table.weight": (cfg["num_classes"] + 1, d),
        "norm.weight": (d,),
        "output.weight": (cfg["vocab_size"], d),
    }
    for i in range(cfg["n_layer"]):
        p = f"layers.{i}."
        shapes[p + "attention.wqkv.weight"] = (3 * d, d)
        shapes[p + "attention.wo.weight"] = (d, d)
        shapes[p + "feed_forward.w1.weight"] = (hid, d)
        shapes[p + "feed_forward.w3.weight"] = (hid, d)
        shapes[p + "feed_forward.w2.weight"] = (d, hid)
        shapes[p + "attention_norm.weight"] = (d,)
        shapes[p + "ffn_norm.weight"] = (d,)
    return shapes


def expected_vq_shapes(cfg):
    """{official tensor name: shape} of the generation half of a LlamaGen VQModel."""
    shapes = {"quantize.embedding.weight": (cfg["codebook_size"], cfg["codebook_embed_dim"])}

    def conv(name, cin, cout, k):
        shapes[name + ".weight"] = (cout, cin, k, k)
        shapes[name + ".bias"] = (cout,)

    def norm(name, c):
        shapes[name + ".weight"] = (c,)
        shapes[name + ".bias"] = (c,)

    def res(prefix, cin, cout):
        norm(prefix + "norm1", cin)
        conv(prefix + "conv1", cin, cout, 3)
        norm(prefix + "norm2", cout)
        conv(prefix + "conv2", cout, cout, 3)
        if cin != cout:
            conv(prefix + "nin_shortcut", cin, cout, 1)

    def attn(prefix, c):
        norm(prefix + "norm", c)
        for n in ("q", "k", "v", "proj_out"):
            conv(prefix + n, c, c, 1)

    ch, mult, nrb = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"]
    conv("post_quant_conv", cfg["codebook_embed_dim"], cfg["z_channels"], 1)
    block_in = ch * mult[-1]
    conv("decoder.conv_in", cfg["z_channels"], block_in, 3)
    res("decoder.mid.0.", block_in, block_in)
    attn("decoder.mid.1.", block_in)
    res("decoder.mid.2.", block_in, block_in)
    for i, level in enumerate(reversed(range(len(mult)))):
        p = f"decoder.conv_blocks.{i}."
        block_out = ch * mult[level]
        for j in range(nrb + 1):
            res(p + f"res.{j}.", block_in, block_out)
            block_in = block_out
            if i == 0:
                attn(p + f"attn.{j}.", block_in)
        if i != len(mult) - 1:
            conv(p + "upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, cfg["out_channels"], 3)
    return shapes


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def _is_junk_gpt(name):
    """Non-weights that official GPT checkpoints may carry."""
    last = name.rsplit(".", 1)[-1]
    return (name == "freqs_cis" or name.endswith(".freqs_cis") or name == "causal_mask"
            or name.endswith(".causal_mask") or last in ("k_cache", "v_cache"))


def _is_junk_vq(name):
    """Parts of a VQModel checkpoint that image generation does not use."""
    return (name.startswith("encoder.") or name.startswith("quant_conv.")
            or name == "quantize.codebook_used" or name.endswith("codebook_used"))


def strip_prefixes(name):
    """Remove torch.compile ("_orig_mod.") and DDP/DeepSpeed ("module.") prefixes, repeatedly."""
    changed = True
    while changed:
        changed = False
        for p in ("_orig_mod.", "module."):
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name.replace("._orig_mod.", ".")


def load_checkpoint(path, allow_pickle=False):
    """torch.load a .pt file on the CPU, weights-only unless allow_pickle."""
    import argparse as _argparse
    import torch

    try:
        torch.serialization.add_safe_globals([_argparse.Namespace])
    except AttributeError:  # torch < 2.4: nothing to register
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file")
    except Exception as e:  # noqa: BLE001 - torch raises assorted unpickling errors
        if not allow_pickle:
            raise ConversionError(
                f"{path}: cannot be loaded weights-only ({type(e).__name__}: {str(e).splitlines()[0]}).\n"
                "If you trust this file, rerun with --allow-pickle (full unpickling runs code from it).")
    print(f"warning: {path}: loading with weights_only=False (--allow-pickle)", file=sys.stderr)
    return torch.load(path, map_location="cpu", weights_only=False)


def unwrap_state_dict(ckpt, path, key=None):
    """The state dict inside an official checkpoint: ckpt[key], or "model", "module",
    "state_dict" (the order sample_c2i.py tries), or ckpt itself when it is a bare state dict."""
    import torch

    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected a dict checkpoint, found {type(ckpt).__name__}")
    if key is not None:
        if key not in ckpt:
            raise ConversionError(f"{path}: no key {key!r} (top-level keys: {sorted(ckpt)[:20]})")
        sd = ckpt[key]
        if not isinstance(sd, dict):
            raise ConversionError(f"{path}: {key!r} holds a {type(sd).__name__}, not a state dict")
    else:
        for k in ("model", "module", "state_dict"):
            if k in ckpt and isinstance(ckpt[k], dict):
                sd = ckpt[k]
                break
        else:
            sd = ckpt
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConversionError(f"{path}: no tensors found (top-level keys: {sorted(ckpt)[:20]})")
    others = sorted(k for k in sd if k not in tensors)
    if others:
        print(f"note: {path}: ignoring non-tensor entries {others[:10]}", file=sys.stderr)
    return tensors


def select_tensors(sd, expected, is_junk, what, path, allow_extra=False, model_opts=("--gpt-model", "--image-size")):
    """Strip prefixes, drop junk, and check sd against expected {name: shape}; return {name: tensor}.

    model_opts names the options that choose the architecture, for the error messages."""
    out, extra = {}, []
    for raw, t in sd.items():
        name = strip_prefixes(raw)
        if is_junk(name):
            continue
        if name not in expected:
            extra.append(name)
            continue
        if name in out:
            raise ConversionError(f"{path}: {what} tensor {name!r} appears twice (prefixed and not)")
        out[name] = t
    missing = [n for n in expected if n not in out]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConversionError(
            f"{path}: {what} tensor {missing[0]!r} is missing{more}; expected shape "
            f"{list(expected[missing[0]])}. Wrong {' / '.join(model_opts)} / checkpoint?")
    for name, shape in expected.items():
        got = tuple(out[name].shape)
        if got != tuple(shape):
            raise ConversionError(
                f"{path}: {what} tensor {name!r} has shape {list(got)}, expected {list(shape)}. "
                f"Wrong {' / '.join(model_opts)} / checkpoint?")
        if not out[name].is_floating_point():
            raise ConversionError(f"{path}: {what} tensor {name!r} has non-float dtype {out[name].dtype}")
    if extra:
        msg = f"{path}: unexpected {what} tensors {sorted(extra)[:8]}" + (" ..." if len(extra) > 8 else "")
        if not allow_extra:
            raise ConversionError(msg + f" (wrong {model_opts[0]}? pass --allow-extra to drop them)")
        print("warning: " + msg + ": dropped", file=sys.stderr)
    return out


def check_rope_table(sd, cfg, path):
    """The weights do not depend on the image size, but a stored freqs_cis (some checkpoints carry
    one) does: [cls_token_num + block_size, head_dim // 2, 2]. Refuse a mismatch."""
    for raw, t in sd.items():
        if strip_prefixes(raw) == "freqs_cis" and t.dim() == 3:
            rows = cfg["cls_token_num"] + cfg["block_size"]
            if t.shape[0] != rows:
                grid = int(round((t.shape[0] - cfg["cls_token_num"]) ** 0.5))
                raise ConversionError(
                    f"{path}: stored freqs_cis has {t.shape[0]} rows, i.e. a {grid}x{grid} token grid, but "
                    f"--image-size / --downsample give block_size {cfg['block_size']} ({rows} rows)")


DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def save_safetensors(tensors, path, dtype, source, tool="convert_llamagen.py"):
    """Write {name: tensor} as contiguous tensors of dtype ("f32", "f16", "bf16"); tool names the
    converter in the file's metadata."""
    import torch
    from safetensors.torch import save_file

    tdt = getattr(torch, DTYPES[dtype])
    data = {k: v.detach().to(tdt).contiguous() for k, v in sorted(tensors.items())}
    tmp = path + ".tmp"
    save_file(data, tmp, metadata={"format": "pt", "source": os.path.basename(source),
                                   "converted_by": f"spire tools/{tool}"})
    os.replace(tmp, path)
    os.chmod(path, 0o644)


def write_config(out_dir, gpt_cfg, vq_cfg):
    """Write config.json, keeping any other sections (draft, draft_head) already there."""
    path = os.path.join(out_dir, "config.json")
    config = {}
    if os.path.exists(path):
        with open(path) as f:
            config = json.load(f)
        kept = sorted(k for k in config if k not in ("gpt", "vq"))
        if kept:
            print(f"note: {path}: keeping existing sections {kept}", file=sys.stderr)
    config["gpt"] = {k: gpt_cfg[k] for k in GPT_KEYS}
    if vq_cfg is not None:
        config["vq"] = {k: vq_cfg[k] for k in VQ_KEYS}
    else:
        config.pop("vq", None)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def convert(gpt_ckpt, gpt_cfg, vq_ckpt, vq_cfg, out_dir, dtype="f32", vq_dtype="f32",
            allow_pickle=False, allow_extra=False, ckpt_key=None, quiet=False):
    """Convert checkpoints for the given config sections into out_dir. Returns the output paths."""
    os.makedirs(out_dir, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    written = []

    log(f"loading {gpt_ckpt}")
    sd = unwrap_state_dict(load_checkpoint(gpt_ckpt, allow_pickle), gpt_ckpt, ckpt_key)
    check_rope_table(sd, gpt_cfg, gpt_ckpt)
    gpt = select_tensors(sd, expected_gpt_shapes(gpt_cfg), _is_junk_gpt, "GPT", gpt_ckpt, allow_extra)
    del sd
    p = os.path.join(out_dir, gpt_cfg["file"])
    save_safetensors(gpt, p, dtype, gpt_ckpt)
    written.append(p)
    log(f"wrote {p}: {len(gpt)} tensors, {sum(t.numel() for t in gpt.values()) / 1e6:.1f}M params, {dtype}")
    del gpt

    if vq_ckpt is not None:
        log(f"loading {vq_ckpt}")
        sd = unwrap_state_dict(load_checkpoint(vq_ckpt, allow_pickle), vq_ckpt, ckpt_key)
        vq = select_tensors(sd, expected_vq_shapes(vq_cfg), _is_junk_vq, "VQ", vq_ckpt, allow_extra)
        p = os.path.join(out_dir, vq_cfg["file"])
        save_safetensors(vq, p, vq_dtype, vq_ckpt)
        written.append(p)
        log(f"wrote {p}: {len(vq)} tensors, {sum(t.numel() for t in vq.values()) / 1e6:.1f}M params, {vq_dtype}")

    write_config(out_dir, gpt_cfg, vq_cfg if vq_ckpt is not None else None)
    written.append(os.path.join(out_dir, "config.json"))
    log(f"wrote {written[-1]}")
    return written


# ---------------------------------------------------------------------------------------------
# Self-test
# ---------------------------------------------------------------------------------------------

TINY_GPT = {"file": "gpt.safetensors", "dim": 32, "n_layer": 2, "n_head": 4, "vocab_size": 64,
            "num_classes": 5, "cls_token_num": 1, "block_size": 16, "rope_base": 10000.0,
            "norm_eps": 1e-5, "multiple_of": 32, "ffn_dim_multiplier": None}
TINY_VQ = {"file": "vq.safetensors", "codebook_size": 64, "codebook_embed_dim": 4,
           "codebook_l2_norm": True, "z_channels": 16, "ch": 8, "ch_mult": [1, 2],
           "num_res_blocks": 1, "out_channels": 3, "norm_groups": 4}


class SelfTest:
    """The self-tests' checks: call with (condition, description) to print ok / FAIL; summary()
    prints the verdict and returns the exit status."""

    def __init__(self):
        self.failures = []

    def __call__(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            self.failures.append(what)

    def summary(self):
        print("selftest: " + ("all passed" if not self.failures else f"{len(self.failures)} FAILED"))
        return 0 if not self.failures else 1


def selftest():
    """Build tiny fake official-style checkpoints, convert them, check the results and the errors."""
    import torch
    from safetensors.torch import load_file

    check = SelfTest()

    # 1. the official size table
    for name, want in EXPECTED_FFN_HIDDEN.items():
        cfg = gpt_config(name, 256)
        check(ffn_hidden(cfg) == want, f"{name}: ffn hidden {ffn_hidden(cfg)} == {want}")
    check(gpt_config("GPT-XL", 384)["block_size"] == 576, "GPT-XL 384: block_size 576")
    check(gpt_config("GPT-B", 256)["block_size"] == 256, "GPT-B 256: block_size 256")
    vq16 = expected_vq_shapes(vq_config(16))
    check(vq16["decoder.conv_in.weight"] == (512, 256, 3, 3), "VQ-16 conv_in [512, 256, 3, 3]")
    check("decoder.conv_blocks.0.attn.2.q.weight" in vq16 and "decoder.conv_blocks.1.attn.0.q.weight" not in vq16,
          "VQ-16: 3 attention blocks in conv_blocks.0 only")
    check("decoder.conv_blocks.3.upsample.conv.weight" in vq16 and "decoder.conv_blocks.4.upsample.conv.weight" not in vq16,
          "VQ-16: 4 upsamplings (x16)")
    check(vq16["decoder.conv_blocks.1.res.0.nin_shortcut.weight"] == (256, 512, 1, 1),
          "VQ-16: conv_blocks.1.res.0 has nin_shortcut 512->256")
    check(vq16["decoder.conv_out.weight"] == (3, 128, 3, 3), "VQ-16 conv_out [3, 128, 3, 3]")

    # 2. tiny fake checkpoints
    g = torch.Generator().manual_seed(0)
    gpt_w = {k: torch.randn(s, generator=g) for k, s in expected_gpt_shapes(TINY_GPT).items()}
    vq_w = {k: torch.randn(s, generator=g) for k, s in expected_vq_shapes(TINY_VQ).items()}
    hd = TINY_GPT["dim"] // TINY_GPT["n_head"]
    gpt_junk = {"freqs_cis": torch.zeros(17, hd // 2, 2), "causal_mask": torch.ones(2, 24, 24, dtype=torch.bool),
                "layers.0.attention.kv_cache.k_cache": torch.zeros(2, 4, 24, hd),
                "layers.0.attention.kv_cache.v_cache": torch.zeros(2, 4, 24, hd)}
    vq_junk = {"quantize.codebook_used": torch.zeros(65536), "quant_conv.weight": torch.zeros(4, 16, 1, 1),
               "quant_conv.bias": torch.zeros(4), "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
               "encoder.conv_in.bias": torch.zeros(8)}

    with tempfile.TemporaryDirectory() as tmp:
        def path(n):
            return os.path.join(tmp, n)

        # DDP-style {"model": ...} with torch.compile prefixes, junk and an argparse "args".
        gpt_sd = {"_orig_mod." + k: v for k, v in {**gpt_w, **gpt_junk}.items()}
        torch.save({"model": gpt_sd, "optimizer": {"state": {}}, "steps": 7,
                    "args": argparse.Namespace(gpt_model="tiny")}, path("gpt.pt"))
        torch.save({"model": {**vq_w, **vq_junk}, "steps": 3}, path("vq.pt"))
        out = path("out")
        convert(path("gpt.pt"), TINY_GPT, path("vq.pt"), TINY_VQ, out, dtype="f32", quiet=True)
        got_g = load_file(os.path.join(out, "gpt.safetensors"))
        got_v = load_file(os.path.join(out, "vq.safetensors"))
        check(sorted(got_g) == sorted(gpt_w), "GPT: exactly the expected names (prefix stripped, junk dropped)")
        check(all(torch.equal(got_g[k], gpt_w[k]) for k in gpt_w), "GPT: values preserved bit-exactly (f32)")
        check(sorted(got_v) == sorted(vq_w), "VQ: exactly the decoder names (encoder/quant_conv/codebook_used dropped)")
        check(all(torch.equal(got_v[k], vq_w[k]) for k in vq_w), "VQ: values preserved bit-exactly (f32)")
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        check(cfg["gpt"] == {k: TINY_GPT[k] for k in GPT_KEYS}, "config.json gpt section")
        check(cfg["vq"] == {k: TINY_VQ[k] for k in VQ_KEYS}, "config.json vq section")

        # DeepSpeed-style {"module": ...} with "module." prefixes, bf16 output.
        torch.save({"module": {"module." + k: v for k, v in gpt_w.items()}}, path("gpt_ds.pt"))
        convert(path("gpt_ds.pt"), TINY_GPT, None, None, path("out_bf16"), dtype="bf16", quiet=True)
        got = load_file(os.path.join(path("out_bf16"), "gpt.safetensors"))
        check(all(got[k].dtype == torch.bfloat16 and torch.equal(got[k], gpt_w[k].to(torch.bfloat16)) for k in gpt_w),
              "module/'module.' layout, bf16 output")
        with open(os.path.join(path("out_bf16"), "config.json")) as f:
            check("vq" not in json.load(f), "no --vq-ckpt: no vq section")

        # Bare state dict (FSDP) and {"state_dict": ...}, f16 output.
        torch.save(dict(gpt_w), path("gpt_bare.pt"))
        torch.save({"state_dict": dict(gpt_w)}, path("gpt_sd.pt"))
        for n in ("gpt_bare.pt", "gpt_sd.pt"):
            convert(path(n), TINY_GPT, None, None, path("out_" + n), dtype="f16", quiet=True)
            got = load_file(os.path.join(path("out_" + n), "gpt.safetensors"))
            check(all(torch.equal(got[k], gpt_w[k].half()) for k in gpt_w), f"{n}: f16 output")

        # Errors name the tensor.
        def expect_error(sd, needle, what, cfg=TINY_GPT, **kw):
            torch.save({"model": sd}, path("bad.pt"))
            try:
                convert(path("bad.pt"), cfg, None, None, path("out_bad"), quiet=True, **kw)
            except ConversionError as e:
                check(needle in str(e), f"{what}: error names {needle!r}")
                return
            check(False, f"{what}: no error raised")

        sd = dict(gpt_w)
        del sd["layers.1.feed_forward.w3.weight"]
        expect_error(sd, "layers.1.feed_forward.w3.weight", "missing tensor")
        sd = dict(gpt_w)
        sd["output.weight"] = torch.zeros(65, 32)
        expect_error(sd, "'output.weight' has shape [65, 32], expected [64, 32]", "mis-shaped tensor")
        sd = dict(gpt_w)
        sd["layers.2.attention.wo.weight"] = torch.zeros(32, 32)
        expect_error(sd, "layers.2.attention.wo.weight", "unexpected tensor")
        torch.save({"model": sd}, path("extra.pt"))
        convert(path("extra.pt"), TINY_GPT, None, None, path("out_extra"), allow_extra=True, quiet=True)
        check(True, "--allow-extra drops unexpected tensors")

        sd = dict(gpt_w)
        sd["freqs_cis"] = torch.zeros(1 + 64, hd // 2, 2)
        expect_error(sd, "8x8 token grid", "stored freqs_cis of another image size")

        # A checkpoint that needs full unpickling is refused unless --allow-pickle.
        torch.save({"model": dict(gpt_w), "args": _Opaque()}, path("pickled.pt"))
        try:
            convert(path("pickled.pt"), TINY_GPT, None, None, path("out_p"), quiet=True)
            check(False, "non-weights pickle refused without --allow-pickle")
        except ConversionError as e:
            check("--allow-pickle" in str(e), "non-weights pickle refused without --allow-pickle")
        convert(path("pickled.pt"), TINY_GPT, None, None, path("out_p"), allow_pickle=True, quiet=True)
        check(True, "--allow-pickle loads it")

    return check.summary()


class _Opaque:
    """A class that weights_only loading refuses (stands in for arbitrary pickled objects)."""


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def add_common_args(ap):
    """The options every converter has: --allow-extra, --allow-pickle, --selftest."""
    ap.add_argument("--allow-extra", action="store_true", help="drop unexpected tensors instead of failing")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="fall back to torch.load(weights_only=False) for trusted files")
    ap.add_argument("--selftest", action="store_true", help="convert tiny fake checkpoints and check the output")


def main(argv=None):
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpt-ckpt", help="official c2i GPT checkpoint, e.g. c2i_XL_384.pt")
    ap.add_argument("--gpt-model", choices=list(GPT_PRESETS), help="official model size")
    ap.add_argument("--image-size", type=int, help="image size the GPT was trained for (256, 384, 512)")
    ap.add_argument("--downsample", type=int, default=16, choices=[8, 16], help="VQ downsample factor (default 16)")
    ap.add_argument("--vq-ckpt", help="official VQ checkpoint, e.g. vq_ds16_c2i.pt (optional)")
    ap.add_argument("--out", help="output weights directory")
    ap.add_argument("--dtype", choices=list(DTYPES), default="f32", help="GPT weight dtype (default f32)")
    ap.add_argument("--vq-dtype", choices=list(DTYPES), default="f32", help="VQ weight dtype (default f32)")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--codebook-size", type=int, default=16384)
    ap.add_argument("--codebook-embed-dim", type=int, default=8)
    ap.add_argument("--ckpt-key", help="take the state dict from this top-level key (e.g. ema)")
    add_common_args(ap)
    args = ap.parse_args(argv)

    if args.selftest:
        return selftest()
    for opt in ("gpt_ckpt", "gpt_model", "image_size", "out"):
        if getattr(args, opt) is None:
            ap.error(f"--{opt.replace('_', '-')} is required (or use --selftest)")
    try:
        gcfg = gpt_config(args.gpt_model, args.image_size, args.downsample, args.codebook_size, args.num_classes)
        vcfg = vq_config(args.downsample, args.codebook_size, args.codebook_embed_dim)
        print(f"{args.gpt_model}: dim {gcfg['dim']}, {gcfg['n_layer']} layers, {gcfg['n_head']} heads, "
              f"ffn hidden {ffn_hidden(gcfg)}, block_size {gcfg['block_size']}", file=sys.stderr)
        convert(args.gpt_ckpt, gcfg, args.vq_ckpt, vcfg, args.out, args.dtype, args.vq_dtype,
                args.allow_pickle, args.allow_extra, args.ckpt_key)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
