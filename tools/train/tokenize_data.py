"""Step 3: encode every image of every split into 8x8 = 64 FSQ token ids -> out/tokens.npz.

Token order is row-major over the 8x8 grid: token t sits at row t // 8, column t % 8.

usage: python tokenize_data.py
"""
import os

import numpy as np
import torch

from common import OUT, setup
from models import Tokenizer, VQConfig
from prep_data import to_model_input


def load_tokenizer(path=os.path.join(OUT, "tokenizer.pt")):
    ck = torch.load(path, map_location="cpu")
    cfg = VQConfig(**{**ck["cfg"], "ch_mult": tuple(ck["cfg"]["ch_mult"])})
    tok = Tokenizer(cfg)
    tok.load_state_dict(ck["state"])
    tok.eval()
    return tok


def main():
    setup(0)
    tok = load_tokenizer()
    d = np.load(os.path.join(OUT, "data.npz"))
    res = {}
    with torch.no_grad():
        for split in ["train", "val", "test"]:
            x = d[f"{split}_x"]
            ids = []
            for i in range(0, len(x), 1000):
                _, idx = tok.encode(torch.from_numpy(to_model_input(x[i:i + 1000])))
                ids.append(idx.reshape(idx.shape[0], -1).numpy().astype(np.int16))
            res[f"{split}_tok"] = np.concatenate(ids)
            res[f"{split}_y"] = d[f"{split}_y"]
            print(split, res[f"{split}_tok"].shape, "distinct codes", len(np.unique(res[f"{split}_tok"])),
                  flush=True)
    np.savez_compressed(os.path.join(OUT, "tokens.npz"), **res)


if __name__ == "__main__":
    main()
