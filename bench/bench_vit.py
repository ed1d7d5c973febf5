"""Qwen ViT + attention pool forward: seedx_jax vs the PyTorch statement, same weights, one run.

    .venv/bin/python bench/bench_vit.py [--width 256 --layers 4 --image 224 --views 8 ...]

Prints views/s for both and the ratio jax/torch (> 1: seedx_jax is faster). The PyTorch side is
tests/torch_vision.py (the module the parity tests compare against); compile time is excluded.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_llama import timed  # noqa: E402
from parity import randomize_  # noqa: E402
from torch_vision import TorchQwenViT  # noqa: E402

from seedx_jax.vision import QwenViT, VisionConfig  # noqa: E402
from seedx_jax.vision.params import load_qwen_vit  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=1024)
    p.add_argument("--output", type=int, default=256)
    p.add_argument("--pool-heads", type=int, default=2)
    p.add_argument("--image", type=int, default=224, help="view side in pixels (multiple of 14)")
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()

    cfg = VisionConfig(image_size=args.image, width=args.width, layers=args.layers, heads=args.heads,
                       mlp_dim=args.mlp, output_dim=args.output, pool_heads=args.pool_heads,
                       dtype=args.dtype)
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    ref = randomize_(TorchQwenViT(cfg))
    tdtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    ref = ref.to(tdtype)
    ours = QwenViT(cfg, rngs=nnx.Rngs(0))
    load_qwen_vit(ours, [(k, v.float().numpy()) for k, v in ref.state_dict().items()], strict=True)
    graphdef, state = nnx.split(ours)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))

    images = np.random.default_rng(0).normal(size=(args.views, args.image, args.image, 3)).astype(np.float32)
    x_j = jnp.asarray(images)
    x_t = torch.tensor(images).permute(0, 3, 1, 2).contiguous().to(tdtype)

    def run_torch():
        with torch.no_grad():
            ref(x_t)

    t_first, t_step = timed(run_torch, args.steps, args.warmup)
    j_first, j_step = timed(lambda: forward(state, x_j).block_until_ready(), args.steps, args.warmup)
    tokens = (args.image // cfg.patch_size) ** 2
    print(f"devices: jax {jax.devices()[0].platform}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"ViT: width {args.width}, {args.layers} layers, {args.heads} heads, mlp {args.mlp}, "
          f"{tokens} patch tokens/view, pool {cfg.pool_grid ** 2} x {args.output}, {args.dtype}")
    print(f"{'batch of views':<16} {'torch views/s':>14} {'jax views/s':>12} {'jax/torch':>10} {'jax compile s':>14}")
    print(f"{args.views:<16} {args.views / t_step:>14.1f} {args.views / j_step:>12.1f} "
          f"{t_step / j_step:>9.2f}x {j_first - j_step:>14.1f}")


if __name__ == "__main__":
    main()
