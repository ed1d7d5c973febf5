"""Image-side rows: one U-Net call (CFG batch 2; stage 2 batch 3), the VAE decode, and whole sampling calls.

U-Net and VAE: the module called through one plain `jax.jit` of (graphdef, state) split once, against the
diffusers module. Sampling: `Detokenizer.generate` (ResamplerXLV2, the jitted Euler loop, VAE decode) from
LLM-regressed features against the official path (the ResamplerXLV2 statement, then diffusers'
StableDiffusionXLPipeline for stage 1, the 3-way guided loop of tests/test_sampling.py for stage 2).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from seedx_jax.diffusion.sampling import SamplerConfig

from sizes import Sizes
from timing import Row, compile_time, first_call, interleave
import torch_side


def _split_jit(fn, module):
    graphdef, state = nnx.split(module)
    jitted = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a))
    return lambda *a: jitted(state, *a)


def _unet_row(s: Sizes, key: str, name: str, unet_t, unet_j, batch: int, pairs: int) -> Row:
    cfg = unet_j.config
    rng = np.random.default_rng(0)
    h = s.latent_side
    tokens = s.detokenizer.resampler.num_queries
    f32 = np.float32
    x = rng.normal(size=(batch, h, h, cfg.in_channels)).astype(f32)
    ctx = rng.normal(size=(batch, tokens, cfg.cross_attention_dim)).astype(f32)
    pooled = rng.normal(size=(batch, cfg.pooled_dim)).astype(f32)
    tids = np.tile(np.array([[s.image_side, s.image_side, 0, 0, s.image_side, s.image_side]], f32), (batch, 1))
    t = np.float32(500.0)
    forward = _split_jit(lambda m, *a: m(*a), unet_j)
    j_args = [jnp.asarray(a) for a in (x, t, ctx, pooled, tids)]
    t_args = (torch.as_tensor(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(500.0), torch.as_tensor(ctx),
              {"text_embeds": torch.as_tensor(pooled), "time_ids": torch.as_tensor(tids)})

    def t_run():
        with torch.no_grad():
            return unet_t(t_args[0], t_args[1], t_args[2], added_cond_kwargs=t_args[3]).sample

    got, first = first_call(lambda: np.asarray(forward(*j_args)))
    diff = float(np.abs(got - t_run().permute(0, 2, 3, 1).numpy()).max())
    tm = interleave({"u": t_run}, {"u": lambda: forward(*j_args).block_until_ready()}, pairs)
    return Row(key, name, tm.calls["torch:u"], tm.calls["jax:u"], compile_time(first, tm, "u"), f"max abs diff {diff:.1e}",
               flops=torch_side.count_flops(t_run))


def _vae_row(s: Sizes, vae_t, vae_j, pairs: int) -> Row:
    h = s.latent_side
    z = np.random.default_rng(1).normal(size=(1, h, h, 4)).astype(np.float32)
    decode = _split_jit(lambda m, x: m.decode(x), vae_j)
    jz, tz = jnp.asarray(z), torch.as_tensor(z).permute(0, 3, 1, 2).contiguous()

    def t_run():
        with torch.no_grad():
            return vae_t.decode(tz).sample

    got, first = first_call(lambda: np.asarray(decode(jz)))
    diff = float(np.abs(got - t_run().permute(0, 2, 3, 1).numpy()).max())
    tm = interleave({"d": t_run}, {"d": lambda: decode(jz).block_until_ready()}, pairs)
    return Row("vae", f"VAE decode {h}x{h} -> {s.image_side}x{s.image_side}", tm.calls["torch:d"], tm.calls["jax:d"],
               compile_time(first, tm, "d"), f"max abs diff {diff:.1e}", flops=torch_side.count_flops(t_run))


def _sampling_row(s: Sizes, stage: int, steps: int, parts, ours, pairs: int) -> Row:
    resampler, unet, vae = parts
    rng = np.random.default_rng(stage)
    n, side = s.num_image_tokens, s.image_side
    dim = s.detokenizer.resampler.embedding_dim
    features, negative = (rng.normal(size=(1, n, dim)).astype(np.float32) for _ in range(2))
    noise = rng.normal(size=(1, s.latent_side, s.latent_side, 4)).astype(np.float32)
    sampler = SamplerConfig(num_steps=steps)
    if stage == 1:
        pipe = torch_side.sdxl_pipeline(unet, vae)

        def t_run():
            return torch_side.torch_stage1(resampler, pipe, features, negative, noise, side, steps)

        def j_run():
            return ours.generate(features, negative, height=side, width=side, sampler=sampler, noise=noise)
    else:
        condition = rng.uniform(size=(1, side, side, 3)).astype(np.float32)

        def t_run():
            return torch_side.torch_stage2(resampler, unet, vae, features, negative, condition, noise, steps)

        def j_run():
            return ours.generate(features, negative, height=side, width=side, sampler=sampler, noise=noise,
                                 condition_images=condition)

    got, first = first_call(lambda: np.asarray(j_run()))
    diff = float(np.abs(np.clip(got / 2 + 0.5, 0, 1) - t_run()).max())
    tm = interleave({"g": t_run}, {"g": lambda: j_run().block_until_ready()}, pairs)
    return Row(f"stage{stage}_{steps}", f"stage-{stage} sampling, {steps} Euler steps ({side} px, guided)",
               tm.calls["torch:g"], tm.calls["jax:g"], compile_time(first, tm, "g"), f"image max abs diff {diff:.1e}",
               flops=torch_side.count_flops(t_run))


def image_rows(s: Sizes, pairs: int, only, sampling_steps: tuple[int, int]) -> list[Row]:
    rows = []
    stage1 = {"unet", "vae", *(f"stage1_{k}" for k in sampling_steps)}
    if stage1 & set(only):
        parts, ours = torch_side.detokenizer_pair(s.detokenizer)
        if "unet" in only:
            rows.append(_unet_row(s, "unet", "U-Net call, CFG batch 2", parts[1], ours.unet, 2, pairs))
        if "vae" in only:
            rows.append(_vae_row(s, parts[2], ours.vae, pairs))
        rows += [_sampling_row(s, 1, k, parts, ours, pairs) for k in sampling_steps if f"stage1_{k}" in only]
    stage2 = {"unet_stage2", *(f"stage2_{k}" for k in sampling_steps)}
    if stage2 & set(only):
        cfg = s.detokenizer.replace(unet=s.detokenizer.unet.replace(in_channels=8))
        parts, ours = torch_side.detokenizer_pair(cfg, seed=1)
        if "unet_stage2" in only:
            rows.append(_unet_row(s, "unet_stage2", "U-Net call, stage 2 batch 3", parts[1], ours.unet, 3, pairs))
        rows += [_sampling_row(s, 2, k, parts, ours, pairs) for k in sampling_steps if f"stage2_{k}" in only]
    return rows
