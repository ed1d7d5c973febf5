"""Full-size SDXL sampling throughput on a GPU/TPU: 1024x1024, 20 Euler steps, CFG, batch 4 (defaults).

    .venv/bin/python bench/bench_sdxl_accel.py [--dtype bfloat16 --attention cudnn --batch 4 --steps 20 --size 1024]
    .venv/bin/python bench/bench_sdxl_accel.py --preset tiny --size 64 --steps 2   # smoke run on CPU

Random weights (speed does not depend on values), initialised on the device. Reports the first call
(trace + compile + run) separately from steady-state seconds per batch and images/s, for the U-Net
sampling loop alone and with the VAE decode. No PyTorch side: run bench/bench_unet.py for the
side-by-side ratio.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_llama import timed  # noqa: E402

from seedx_jax.diffusion.sampling import Conditioning, SamplerConfig, sample_latents  # noqa: E402
from seedx_jax.diffusion.unet import UNet2DConditionModel, UNetConfig  # noqa: E402
from seedx_jax.diffusion.vae import AutoencoderKL, VAEConfig  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="sdxl", choices=sorted(UNetConfig.PRESETS))
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--attention", default="xla", help="attention_impl: xla | cudnn | a registered kernel")
    p.add_argument("--size", type=int, default=1024, help="image side in pixels")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    ucfg = UNetConfig.preset(args.preset, dtype=args.dtype, param_dtype=args.dtype, attention_impl=args.attention)
    vcfg = VAEConfig.preset("sdxl" if args.preset.startswith("sdxl") else "tiny", dtype=args.dtype,
                            param_dtype=args.dtype)
    unet = nnx.jit(lambda: UNet2DConditionModel(ucfg, rngs=nnx.Rngs(0)))()
    vae = nnx.jit(lambda: AutoencoderKL(vcfg, rngs=nnx.Rngs(1)))()
    b, latent = args.batch, args.size // vcfg.downsample_factor
    keys = jax.random.split(jax.random.key(0), 4)
    cond = [Conditioning(jax.random.normal(keys[i], (b, 64, ucfg.cross_attention_dim)),
                         jax.random.normal(keys[i + 2], (b, ucfg.pooled_dim)),
                         jnp.tile(jnp.asarray([[args.size, args.size, 0, 0, args.size, args.size]], jnp.float32), (b, 1)))
            for i in range(2)]
    sampler = SamplerConfig(num_steps=args.steps)
    decode = nnx.jit(lambda v, z: v.decode(z / v.config.scaling_factor))

    def loop():
        return sample_latents(unet, cond[0], cond[1], config=sampler, latent_size=(latent, latent)).block_until_ready()

    def loop_and_decode():
        return decode(vae, loop()).block_until_ready()

    l_first, l_step = timed(loop, args.repeats, 1)
    d_first, d_step = timed(loop_and_decode, args.repeats, 1)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(unet)))
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}), jax {jax.__version__}")
    print(f"U-Net {args.preset} ({n_params / 1e9:.3f}e9 params), {args.dtype}, attention {args.attention}; "
          f"{args.size}x{args.size}, {args.steps} Euler steps, CFG (model batch {2 * b}), batch {b}")
    print(f"{'':<22} {'first call s':>13} {'s/batch':>9} {'images/s':>9}")
    print(f"{'sampling loop':<22} {l_first:>13.1f} {l_step:>9.3f} {b / l_step:>9.2f}")
    print(f"{'loop + VAE decode':<22} {d_first:>13.1f} {d_step:>9.3f} {b / d_step:>9.2f}")


if __name__ == "__main__":
    main()
