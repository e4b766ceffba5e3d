"""Read/write the engine's weights-directory format (docs/ARCHITECTURE.md, "Weights directory format").

load_demo(dir) rebuilds float32 PyTorch models from config.json + *.safetensors (any dtype), so
every measurement in weights/demo/README.md and golden.json uses exactly the shipped weights.
"""
import json
import os

import torch
from safetensors.torch import load_file, save_file

from models import GPT, GPTConfig, DraftHead, HeadConfig, Decoder, VQConfig

GPT_KEYS = ["dim", "n_layer", "n_head", "vocab_size", "num_classes", "cls_token_num", "block_size",
            "rope_base", "norm_eps", "multiple_of", "ffn_dim_multiplier"]


def save_f16(state: dict, path: str):
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}, path)


def gpt_from(cfg_json: dict, tensors: dict) -> GPT:
    cfg = GPTConfig(**{k: cfg_json[k] for k in GPT_KEYS})
    m = GPT(cfg)
    m.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return m.eval()


class VQGen(torch.nn.Module):
    """The generation half of the tokenizer: explicit codebook + post_quant_conv + decoder."""

    def __init__(self, c: VQConfig):
        super().__init__()
        self.cfg = c
        self.quantize = torch.nn.Module()
        self.quantize.embedding = torch.nn.Embedding(c.codebook_size, c.codebook_embed_dim)
        self.post_quant_conv = torch.nn.Conv2d(c.codebook_embed_dim, c.z_channels, 1)
        self.decoder = Decoder(c)

    def decode_tokens(self, idx):
        """idx: [B, g, g] token ids (row-major grid) -> [B, 3, 32, 32] float (before pixel map)."""
        e = self.quantize.embedding.weight
        if self.cfg.codebook_l2_norm:
            e = torch.nn.functional.normalize(e, dim=-1)
        z = e[idx].permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(z))


def load_demo(d: str):
    cfg = json.load(open(os.path.join(d, "config.json")))
    out = {"config": cfg}
    out["gpt"] = gpt_from(cfg["gpt"], load_file(os.path.join(d, cfg["gpt"]["file"])))
    if "draft" in cfg:
        out["draft"] = gpt_from(cfg["draft"], load_file(os.path.join(d, cfg["draft"]["file"])))
    if "draft_head" in cfg:
        h = cfg["draft_head"]
        hc = HeadConfig(n_head=h["n_head"], multiple_of=h["multiple_of"],
                        ffn_dim_multiplier=h["ffn_dim_multiplier"], norm_eps=h["norm_eps"])
        head = DraftHead(cfg["gpt"]["dim"], hc)
        head.load_state_dict({k: v.float() for k, v in load_file(os.path.join(d, h["file"])).items()},
                             strict=True)
        out["draft_head"] = head.eval()
    v = cfg["vq"]
    vc = VQConfig(**{k: v[k] for k in ["codebook_size", "codebook_embed_dim", "codebook_l2_norm",
                                        "z_channels", "ch", "num_res_blocks", "out_channels",
                                        "norm_groups"]}, ch_mult=tuple(v["ch_mult"]))
    vq = VQGen(vc)
    vq.load_state_dict({k: t.float() for k, t in load_file(os.path.join(d, v["file"])).items()},
                       strict=True)
    out["vq"] = vq.eval()
    return out
