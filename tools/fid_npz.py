"""Pack generated images as the .npz the standard ImageNet FID suite reads.

The OpenAI guided-diffusion evaluator (`evaluations/evaluator.py`, used by ADM, LlamaGen, MAR,
VAR) takes a reference batch and a sample batch, each an .npz whose `arr_0` is uint8 NHWC RGB.
This script builds the sample batch from a directory of PNGs (e.g. `spire generate --out-dir`),
in file-name order, optionally resized (bicubic, as LlamaGen's sampler does for 384 -> 256).

usage: python tools/fid_npz.py --images DIR --out samples.npz [--resize 256] [--limit N]
"""
import argparse
import glob
import os

import numpy as np
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="directory of PNG images")
    ap.add_argument("--out", required=True, help="output .npz (arr_0: uint8 [N, H, W, 3])")
    ap.add_argument("--resize", type=int, default=0, help="resize to this square side (0: keep)")
    ap.add_argument("--limit", type=int, default=0, help="use at most this many images (0: all)")
    a = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(a.images, "*.png")))
    if a.limit:
        paths = paths[:a.limit]
    if not paths:
        raise SystemExit(f"no PNG images in {a.images} (write them with `spire generate --out-dir {a.images}`)")
    images = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        if a.resize:
            image = image.resize((a.resize, a.resize), Image.BICUBIC)
        images.append(np.asarray(image, dtype=np.uint8))
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise SystemExit(f"images of different sizes {sorted(shapes)}: pass --resize")
    batch = np.stack(images)
    np.savez(a.out, arr_0=batch)
    print(f"wrote {a.out}: arr_0 {batch.dtype} {batch.shape}")


if __name__ == "__main__":
    main()
