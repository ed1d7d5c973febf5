"""SDXL-style U-Net: one forward step and an N-step guided sampling loop, seedx_jax vs diffusers, one run.

    .venv/bin/python bench/bench_unet.py [--channels 64 128 256 --layers 1 1 2 --latent 32 --batch 2 --steps 10]

Same config, same weights (loaded through the diffusers key table), same inputs. Prints seconds and
the ratio torch/jax (> 1: seedx_jax is faster) for (a) one U-Net forward on the CFG batch and (b)
the whole sampling loop: diffusers' StableDiffusionXLPipeline with precomputed embeddings and
output_type="latent" against `sample_latents` (one jit, fori_loop). Compile time is excluded and
printed separately. For full-size SDXL on a GPU/TPU use bench/bench_sdxl_accel.py.
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

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_llama import timed  # noqa: E402
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline  # noqa: E402
from flax import nnx  # noqa: E402
from test_sampling import SDXL_SCHEDULER  # noqa: E402
from test_unet import build_pair  # noqa: E402

from seedx_jax.diffusion.sampling import Conditioning, SamplerConfig, sample_latents  # noqa: E402
from seedx_jax.diffusion.unet import UNetConfig  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, nargs=3, default=[64, 128, 256])
    p.add_argument("--layers", type=int, nargs=3, default=[1, 1, 2], help="transformer layers per level")
    p.add_argument("--heads", type=int, nargs=3, default=[1, 2, 4])
    p.add_argument("--context", type=int, default=256, help="cross-attention width (SDXL 2048)")
    p.add_argument("--tokens", type=int, default=64, help="context tokens (SEED-X 64)")
    p.add_argument("--latent", type=int, default=32, help="latent side (SDXL 1024 px: 128)")
    p.add_argument("--batch", type=int, default=1, help="images; the model batch is 2x (CFG)")
    p.add_argument("--steps", type=int, default=10, help="sampling steps")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    cfg = UNetConfig(block_out_channels=tuple(args.channels), transformer_layers_per_block=tuple(args.layers),
                     num_attention_heads=tuple(args.heads), cross_attention_dim=args.context, pooled_dim=128,
                     addition_time_embed_dim=32, norm_num_groups=32)
    torch.set_num_threads(os.cpu_count())
    ref, ours = build_pair(cfg)
    rng = np.random.default_rng(0)
    b, s = args.batch, args.latent
    f32 = np.float32
    pos, neg = (Conditioning(rng.normal(size=(b, args.tokens, args.context)).astype(f32),
                             rng.normal(size=(b, 128)).astype(f32),
                             np.tile(np.array([[8 * s, 8 * s, 0, 0, 8 * s, 8 * s]], f32), (b, 1))) for _ in range(2))
    noise = rng.normal(size=(b, s, s, 4)).astype(f32)

    # (a) one forward on the CFG batch
    x2 = np.concatenate([noise, noise])
    ctx, pooled, tids = (np.concatenate([a, c]) for a, c in zip(neg, pos))
    graphdef, state = nnx.split(ours)
    forward = jax.jit(lambda st, *a: nnx.merge(graphdef, st)(*a))
    j_args = [jnp.asarray(a) for a in (x2, np.float32(500.0), ctx, pooled, tids)]
    t_args = (torch.tensor(x2).permute(0, 3, 1, 2).contiguous(), torch.tensor(500.0), torch.tensor(ctx),
              {"text_embeds": torch.tensor(pooled), "time_ids": torch.tensor(tids)})

    def torch_forward():
        with torch.no_grad():
            ref(t_args[0], t_args[1], t_args[2], added_cond_kwargs=t_args[3])

    tf_first, tf = timed(torch_forward, args.repeats, 1)
    jf_first, jf = timed(lambda: forward(state, *j_args).block_until_ready(), args.repeats, 1)

    # (b) the sampling loop
    vae = AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                     unet=ref, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)

    def torch_loop():
        with torch.no_grad():
            pipe(prompt_embeds=torch.tensor(pos.context), pooled_prompt_embeds=torch.tensor(pos.pooled),
                 negative_prompt_embeds=torch.tensor(neg.context), negative_pooled_prompt_embeds=torch.tensor(neg.pooled),
                 height=8 * s, width=8 * s, num_inference_steps=args.steps, guidance_scale=7.5,
                 latents=torch.tensor(noise).permute(0, 3, 1, 2), output_type="latent")

    j_pos, j_neg = (Conditioning(*map(jnp.asarray, c)) for c in (pos, neg))
    sampler = SamplerConfig(num_steps=args.steps)
    tl_first, tl = timed(torch_loop, args.repeats, 1)
    jl_first, jl = timed(lambda: sample_latents(ours, j_pos, j_neg, config=sampler, noise=jnp.asarray(noise))
                         .block_until_ready(), args.repeats, 1)

    print(f"devices: jax {jax.devices()[0].platform}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"U-Net: channels {args.channels}, transformer layers {args.layers}, heads {args.heads}, context "
          f"{args.tokens}x{args.context}, latent {s}x{s}, batch {b} (x2 CFG), float32")
    print(f"{'':<28} {'torch s':>9} {'jax s':>9} {'torch/jax':>10} {'jax compile s':>14}")
    print(f"{'one U-Net forward':<28} {tf:>9.3f} {jf:>9.3f} {tf / jf:>9.2f}x {jf_first - jf:>14.1f}")
    print(f"{f'{args.steps}-step guided loop':<28} {tl:>9.3f} {jl:>9.3f} {tl / jl:>9.2f}x {jl_first - jl:>14.1f}")


if __name__ == "__main__":
    main()
