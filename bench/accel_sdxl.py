"""Suite part `sdxl`: SDXL text-to-image sampling, 1024 x 1024, batch 4, 20 Euler steps with classifier-free
guidance (U-Net batch 8): our `sample_latents` (the whole loop in one jit) against diffusers'
`StableDiffusionXLPipeline` loop (precomputed prompt embeddings, `output_type="latent"`, the SDXL Euler
scheduler) around diffusers' `UNet2DConditionModel`, on the same device, with the same random weights,
noise and conditioning, both in bf16. The U-Net loop alone: no text encoders, no VAE decode.
The final latents of both are compared (relative L2).
"""
from __future__ import annotations

import importlib.util
import time

from accel_common import (Budget, Recorder, state_numpy, timed_interleaved, torch_device, torch_sync,
                          with_attention_fallback)

SIZES = {"gpu": dict(preset="sdxl", size=1024, batch=4, steps=20, tokens=77, dtype="bfloat16", repeats=3),
         "smoke": dict(preset="tiny", size=64, batch=1, steps=2, tokens=5, dtype="float32", repeats=2)}


def _torch_pipeline(cfg, device: str, dtype: str):
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from diffusers import UNet2DConditionModel as TorchUNet
    from parity import randomize_
    from test_sampling import SDXL_SCHEDULER
    from test_unet import diffusers_kwargs

    torch.manual_seed(0)
    with torch.device(device):
        unet = randomize_(TorchUNet(**diffusers_kwargs(cfg)))  # non-trivial norms and biases
        # only its config is read (the 8x scale factor): the loop stops at the latents
        vae = AutoencoderKL(block_out_channels=(8,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=EulerDiscreteScheduler.from_config(
                                         SDXL_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, getattr(torch, dtype))


def _relative_l2(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _build_ours(cfg, pipe, call):
    """Our U-Net with the pipeline's weights (random ones without a pipeline), and the seconds of its first
    `call(unet)` (trace, compile, one run)."""
    from flax import nnx

    from seedx_jax.diffusion.params import load_unet
    from seedx_jax.diffusion.unet import UNet2DConditionModel

    ours = UNet2DConditionModel(cfg, rngs=nnx.Rngs(0))
    if pipe is not None:
        load_unet(ours, state_numpy(pipe.unet), strict=True)
    start = time.perf_counter()
    call(ours)
    return ours, time.perf_counter() - start


def run(args, rec: Recorder, budget: Budget) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from seedx_jax.diffusion.sampling import Conditioning, SamplerConfig, sample_latents
    from seedx_jax.diffusion.unet import UNetConfig

    sizes = SIZES["smoke" if args.smoke else "gpu"]
    device, line = torch_device(jax.devices()[0].platform)
    rec.note(line)
    if device is not None and importlib.util.find_spec("diffusers") is None:
        device = None
        rec.note("diffusers is not installed: the PyTorch row is skipped; ours still runs")
    dtype, b, s = sizes["dtype"], sizes["batch"], sizes["size"]
    cfg = UNetConfig.preset(sizes["preset"], dtype=dtype, param_dtype=dtype)
    pipe = _torch_pipeline(cfg, device, dtype) if device else None
    rng = np.random.default_rng(0)
    pos, neg = (Conditioning(rng.normal(size=(b, sizes["tokens"], cfg.cross_attention_dim)).astype(np.float32),
                             rng.normal(size=(b, cfg.pooled_dim)).astype(np.float32),
                             np.tile(np.array([[s, s, 0, 0, s, s]], np.float32), (b, 1))) for _ in range(2))
    noise = rng.normal(size=(b, s // 8, s // 8, cfg.out_channels)).astype(np.float32)
    sampler = SamplerConfig(num_steps=sizes["steps"], guidance_scale=7.5)
    j_pos, j_neg = (Conditioning(*map(jnp.asarray, c)) for c in (pos, neg))
    j_noise = jnp.asarray(noise)
    latents = {}

    def sample(unet):
        latents["ours"] = np.asarray(sample_latents(unet, j_pos, j_neg, config=sampler, noise=j_noise))

    (ours, first_s), attention = with_attention_fallback(
        lambda impl: _build_ours(cfg.replace(attention_impl=impl), pipe, sample), args.attention, rec)
    fns = {"ours": lambda: sample(ours)}
    if pipe is not None:
        import torch

        tdt = getattr(torch, dtype)
        t_args = dict(prompt_embeds=torch.tensor(pos.context, dtype=tdt, device=device),
                      pooled_prompt_embeds=torch.tensor(pos.pooled, dtype=tdt, device=device),
                      negative_prompt_embeds=torch.tensor(neg.context, dtype=tdt, device=device),
                      negative_pooled_prompt_embeds=torch.tensor(neg.pooled, dtype=tdt, device=device),
                      latents=torch.tensor(noise, dtype=tdt, device=device).permute(0, 3, 1, 2),
                      height=s, width=s, num_inference_steps=sizes["steps"], guidance_scale=7.5,
                      output_type="latent")

        def torch_loop():
            with torch.no_grad():
                out = pipe(**t_args).images
            torch_sync(device)
            latents["torch"] = out.permute(0, 2, 3, 1).float().cpu().numpy()

        fns["torch"] = torch_loop
    t = timed_interleaved(fns, sizes["repeats"], budget)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(ours)))
    rec.detail("config", dict(preset=sizes["preset"], size=s, batch=b, steps=sizes["steps"], dtype=dtype,
                              context_tokens=sizes["tokens"], attention=attention, params=int(params)))
    rec.detail("timings", t)
    compile_s = max(first_s - t["ours"]["median_s"], 0.0)
    rec.detail("ours_compile_s", compile_s)
    if pipe is not None:
        diff = _relative_l2(latents["ours"], latents["torch"])
        rec.detail("latents_relative_l2", diff)
        rec.note(f"final latents: relative L2 difference ours vs diffusers {diff:.2e}")
    rec.row(f"SDXL U-Net loop {s}px, batch {b}, {sizes['steps']} Euler steps, CFG", "img/s", b / t["ours"]["median_s"],
            b / t["torch"]["median_s"] if pipe is not None else None, ours_compile_s=compile_s,
            torch_first_s=t["torch"]["first_s"] if pipe is not None else None)
