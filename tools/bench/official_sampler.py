"""Time the official LlamaGen sampler (its own gpt.py + generate.py, eager PyTorch) on a spire
weights directory, for the same workload `spire bench --modes none` times: class-conditional
AR images of `block_size` tokens, CFG as a batch of 2, temperature 1, top-k/top-p off.

The official code is not vendored: pass a checkout of FoundationVision/LlamaGen (only its
`autoregressive/` and `utils/` folders are imported). The GPT weights use the official tensor
names (docs/ARCHITECTURE.md), so they load with `load_state_dict(strict=True)`; 16-bit files are
widened to float32, the precision spire's CPU backend computes in.

    .venv/bin/python tools/bench/official_sampler.py --llamagen ../LlamaGen --weights weights/demo \
        --threads 2 --images 20

Prints one JSON object (ms per image, tokens per second, torch version, threads).
"""
import argparse
import warnings
import json
import sys
import time
from pathlib import Path


def load_model(llamagen, weights):
    """The official `Transformer` for the `gpt` section of `weights/config.json`, weights loaded."""
    sys.path.insert(0, str(Path(llamagen).resolve()))
    import torch
    from safetensors.torch import load_file
    from autoregressive.models.gpt import ModelArgs, Transformer

    config = json.loads((Path(weights) / "config.json").read_text())["gpt"]
    args = ModelArgs(
        dim=config["dim"], n_layer=config["n_layer"], n_head=config["n_head"],
        vocab_size=config["vocab_size"], num_classes=config["num_classes"],
        cls_token_num=config["cls_token_num"], block_size=config["block_size"],
        rope_base=config["rope_base"], norm_eps=config["norm_eps"],
        multiple_of=config["multiple_of"], ffn_dim_multiplier=config["ffn_dim_multiplier"],
        class_dropout_prob=0.1,  # > 0 gives the null-class row CFG uses, as in training
        model_type="c2i",
    )
    model = Transformer(args)
    state = {k: v.to(torch.float32) for k, v in load_file(str(Path(weights) / config["file"])).items()}
    model.load_state_dict(state, strict=True)
    return model.eval(), config


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llamagen", required=True, help="checkout of FoundationVision/LlamaGen")
    ap.add_argument("--weights", default="weights/demo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    # generate.py enters torch.backends.cuda.sdp_kernel(), deprecated in recent torch.
    warnings.filterwarnings("ignore", category=FutureWarning)

    import torch

    torch.set_num_threads(a.threads)
    model, config = load_model(a.llamagen, a.weights)
    from autoregressive.models.generate import generate

    def image(i):
        cond = torch.tensor([i % min(config["num_classes"], 10)])
        torch.manual_seed(i)
        return generate(model, cond, config["block_size"], cfg_scale=a.cfg, temperature=1.0, top_k=0, top_p=1.0, sample_logits=True)

    with torch.inference_mode():
        for i in range(a.warmup):
            image(i)
        start = time.perf_counter()
        for i in range(a.images):
            tokens = image(i)
        ms = (time.perf_counter() - start) * 1e3 / a.images
    assert tokens.shape == (1, config["block_size"]), tokens.shape
    print(json.dumps({
        "sampler": "official LlamaGen generate() (eager)", "weights": a.weights, "threads": torch.get_num_threads(),
        "cfg": a.cfg, "images": a.images, "ms_per_image": round(ms, 2),
        "tokens_per_s": round(config["block_size"] * 1e3 / ms, 1), "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
