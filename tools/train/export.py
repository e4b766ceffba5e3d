"""Step 6: export weights/demo/ in the engine format and write golden.json.

Writes config.json, gpt.safetensors, draft.safetensors, draft_head.safetensors, vq.safetensors
(float16, official LlamaGen tensor names), then reloads them into float32 models (demo_io.load_demo)
and computes golden.json from the reloaded models.

usage: python export.py [--dst ../../weights/demo] [--golden-class 3]
"""
import argparse
import json
import os

import numpy as np
import torch

from common import HERE, OUT, setup
from demo_io import load_demo, save_f16
from models import GPTConfig, HeadConfig, VQConfig, head_teacher_forced


def r7(t):
    """Tensor -> nested lists of floats with 7 significant digits (float32 precision)."""
    a = t.detach().float().numpy()
    return np.vectorize(lambda x: float(f"{x:.7g}"), otypes=[object])(a).tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dst", default=os.path.normpath(os.path.join(HERE, "..", "..", "weights", "demo")))
    ap.add_argument("--golden-class", type=int, default=3)
    ap.add_argument("--prefix-len", type=int, default=8)
    ap.add_argument("--src", default=OUT)
    ap.add_argument("--tokens", default=os.path.join(OUT, "tokens.npz"))
    a = ap.parse_args()
    setup(0)
    os.makedirs(a.dst, exist_ok=True)
    src = lambda n: torch.load(os.path.join(a.src, n), map_location="cpu")

    tgt, dft, head, tok = src("target.pt"), src("draft.pt"), src("draft_head.pt"), src("tokenizer.pt")
    tcfg, dcfg = GPTConfig(**tgt["cfg"]), GPTConfig(**dft["cfg"])
    hcfg = HeadConfig(**head["cfg"])
    vcfg = VQConfig(**{**tok["cfg"], "ch_mult": tuple(tok["cfg"]["ch_mult"])})
    assert head["dim"] == tcfg.dim

    save_f16(tgt["state"], os.path.join(a.dst, "gpt.safetensors"))
    save_f16(dft["state"], os.path.join(a.dst, "draft.safetensors"))
    save_f16(head["state"], os.path.join(a.dst, "draft_head.safetensors"))
    from models import FSQ
    ts = tok["state"]
    vq = {"quantize.embedding.weight": FSQ().codebook(),
          "post_quant_conv.weight": ts["post_quant_conv.weight"],
          "post_quant_conv.bias": ts["post_quant_conv.bias"]}
    vq.update({k: v for k, v in ts.items() if k.startswith("decoder.")})
    save_f16(vq, os.path.join(a.dst, "vq.safetensors"))
    config = {"gpt": tcfg.export_dict("gpt.safetensors"),
              "draft": dcfg.export_dict("draft.safetensors"),
              "draft_head": hcfg.export_dict("draft_head.safetensors"),
              "vq": vcfg.export_dict("vq.safetensors")}
    with open(os.path.join(a.dst, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    # ---- golden, from the reloaded float16 -> float32 weights ----
    m = load_demo(a.dst)
    gpt, draft, dh, vqm = m["gpt"], m["draft"], m["draft_head"], m["vq"]
    d = np.load(a.tokens)
    vi = int(np.nonzero(d["val_y"] == a.golden_class)[0][0])
    tokens = d["val_tok"][vi].astype(np.int64)
    P = a.prefix_len
    with torch.no_grad():
        x = torch.from_numpy(tokens[None, :P])
        y = torch.tensor([a.golden_class])
        lc, fc = gpt(y, x)                      # [1, P+1, V], features f_0..f_P
        ln, _ = gpt(y, x, force_null=True)
        ld, _ = draft(y, x)
        lh, _ = head_teacher_forced(dh, gpt, x, fc[:, :P])  # positions 1..P
        pix = vqm.decode_tokens(torch.from_numpy(tokens).reshape(1, 8, 8))[0]
    golden = {"class": a.golden_class, "tokens": tokens.tolist(), "prefix_len": P,
              "val_index": vi,
              "gpt_logits_cond": r7(lc[0]), "gpt_logits_null": r7(ln[0]),
              "draft_logits_cond": r7(ld[0]), "draft_head_logits_cond": r7(lh[0]),
              "vq_pixels": r7(pix)}
    with open(os.path.join(a.dst, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
    sizes = {n: os.path.getsize(os.path.join(a.dst, n)) for n in sorted(os.listdir(a.dst))}
    print("wrote", a.dst, sizes)
    print("golden: val index", vi, "tokens[:8]", tokens[:P].tolist())
    # sanity: head step-1 argmax agreement with target on the golden prefix
    print("argmax gpt pos1..8", lc[0, 1:].argmax(-1).tolist())
    print("argmax head pos1..8", lh[0].argmax(-1).tolist())


if __name__ == "__main__":
    main()
