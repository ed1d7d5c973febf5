"""Jitted sampling loops vs diffusers, SAME tiny U-Net weights and the same initial noise.

- Stage 1: diffusers' StableDiffusionXLPipeline fed precomputed prompt_embeds / pooled_prompt_embeds
  (no text encoders), 4 guided steps, output_type="latent"; Euler (the SDXL scheduler), DDIM and
  DPM-Solver++ swapped in with `from_config`. Bound: 1e-3 relative on the final latents (issue 4).
- Stage 2: a PyTorch loop written from docs/detokenizer.md around diffusers' U-Net and Euler scheduler
  (3-way guidance in x0 space, condition latent in channels 4-7). Bound 1e-3 relative.
"""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       StableDiffusionXLPipeline)

from seedx_jax.diffusion.sampling import Conditioning, SamplerConfig, sample_latents
from seedx_jax.diffusion.unet import UNetConfig
from parity import max_rel_diff
from test_unet import build_pair

CFG = UNetConfig.preset("tiny")
SDXL_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", timestep_spacing="leading", steps_offset=1,
                      interpolation_type="linear", use_karras_sigmas=False, set_alpha_to_one=False,
                      clip_sample=False, skip_prk_steps=True)
SIZE = 8  # latent height = width; pixels 64 with the 8x VAE below


def conditioning(seed: int, batch: int = 1) -> Conditioning:
    rng = np.random.default_rng(seed)
    return Conditioning(rng.normal(size=(batch, 5, CFG.cross_attention_dim)).astype(np.float32),
                        rng.normal(size=(batch, CFG.pooled_dim)).astype(np.float32),
                        np.tile(np.array([[64, 64, 0, 0, 64, 64]], np.float32), (batch, 1)))


@pytest.fixture(scope="module")
def pair():
    return build_pair(CFG)


def _pipeline(ref_unet, scheduler_cls):
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, latent_channels=4)
    scheduler = scheduler_cls.from_config(SDXL_SCHEDULER)  # the SDXL file, read by each class
    return StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=ref_unet, scheduler=scheduler)


@pytest.mark.parametrize("solver, scheduler_cls", [("euler", EulerDiscreteScheduler), ("ddim", DDIMScheduler),
                                                   ("dpmpp_2m", DPMSolverMultistepScheduler)])
def test_stage1_guided_sampling_matches_sdxl_pipeline(pair, solver, scheduler_cls):
    ref, ours = pair
    pos, neg = conditioning(0), conditioning(1)
    noise = np.random.default_rng(2).normal(size=(1, SIZE, SIZE, 4)).astype(np.float32)
    pipe = _pipeline(ref, scheduler_cls)
    with torch.no_grad():
        want = pipe(prompt_embeds=torch.tensor(pos.context), pooled_prompt_embeds=torch.tensor(pos.pooled),
                    negative_prompt_embeds=torch.tensor(neg.context),
                    negative_pooled_prompt_embeds=torch.tensor(neg.pooled), height=8 * SIZE, width=8 * SIZE,
                    num_inference_steps=4, guidance_scale=7.5, latents=torch.tensor(noise).permute(0, 3, 1, 2),
                    output_type="latent").images.permute(0, 2, 3, 1).numpy()
    got = sample_latents(ours, Conditioning(*map(jnp.asarray, pos)), Conditioning(*map(jnp.asarray, neg)),
                         config=SamplerConfig(solver=solver, num_steps=4), noise=jnp.asarray(noise))
    assert max_rel_diff(got, want) <= 1e-3
    # guidance matters: an unguided run differs from the reference by far more than the bound
    unguided = sample_latents(ours, Conditioning(*map(jnp.asarray, pos)),
                              config=SamplerConfig(solver=solver, num_steps=4, guidance_scale=1.0),
                              noise=jnp.asarray(noise))
    assert max_rel_diff(unguided, want) > 1e-2


def torch_edit_loop(unet, scheduler, pos, neg, cond_latents, noise, steps, text_scale, image_scale):
    """Official stage-2 sampling as a PyTorch statement: batch [pos/cond, neg/cond, neg/zeros], x0-space guidance."""
    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    scheduler.set_timesteps(steps)
    ctx = torch.cat([t(pos.context), t(neg.context), t(neg.context)])
    pooled = torch.cat([t(pos.pooled), t(neg.pooled), t(neg.pooled)])
    time_ids = torch.cat([t(pos.time_ids)] * 3)
    cond = t(cond_latents).permute(0, 3, 1, 2)
    image_latents = torch.cat([cond, cond, torch.zeros_like(cond)])
    latents = t(noise).permute(0, 3, 1, 2) * scheduler.init_noise_sigma
    for i, ts in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(torch.cat([latents] * 3), ts)
        model_in = torch.cat([model_in, image_latents], dim=1)
        with torch.no_grad():
            eps = unet(model_in, ts, ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        sigma = scheduler.sigmas[i]
        x0_t, x0_i, x0_u = (latents - sigma * e for e in eps.chunk(3))
        x0 = x0_u + text_scale * (x0_t - x0_i) + image_scale * (x0_i - x0_u)
        eps = (x0 - latents) / (-sigma)
        latents = scheduler.step(eps, ts, latents).prev_sample
    return latents.permute(0, 2, 3, 1).numpy()


def test_stage2_edit_sampling_matches_the_official_rule():
    cfg = CFG.replace(in_channels=8)
    ref, ours = build_pair(cfg, seed=3)
    pos, neg = conditioning(4), conditioning(5)
    rng = np.random.default_rng(6)
    noise, cond = (rng.normal(size=(1, SIZE, SIZE, 4)).astype(np.float32) for _ in range(2))
    want = torch_edit_loop(ref, EulerDiscreteScheduler.from_config(SDXL_SCHEDULER), pos, neg, cond, noise, 4, 7.5, 1.5)
    got = sample_latents(ours, Conditioning(*map(jnp.asarray, pos)), Conditioning(*map(jnp.asarray, neg)),
                         config=SamplerConfig(num_steps=4), noise=jnp.asarray(noise), cond_latents=jnp.asarray(cond))
    assert max_rel_diff(got, want) <= 1e-3
    swapped = sample_latents(ours, Conditioning(*map(jnp.asarray, pos)), Conditioning(*map(jnp.asarray, neg)),
                             config=SamplerConfig(num_steps=4, image_guidance_scale=3.0), noise=jnp.asarray(noise),
                             cond_latents=jnp.asarray(cond))
    assert max_rel_diff(swapped, want) > 1e-2


def test_seeded_noise_is_reproducible(pair):
    _, ours = pair
    pos = Conditioning(*map(jnp.asarray, conditioning(0)))
    run = lambda seed: sample_latents(ours, pos, config=SamplerConfig(num_steps=2, guidance_scale=1.0),  # noqa: E731
                                      latent_size=(SIZE, SIZE), seed=seed)
    a, b, c = run(0), run(0), run(1)
    assert a.shape == (1, SIZE, SIZE, 4)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).max()) > 0.1


@pytest.mark.parametrize("kwargs, message", [
    (dict(guidance_scale=0.0), r"SamplerConfig.guidance_scale=0.0 must be > 0"),
    (dict(image_guidance_scale=-1.0), r"SamplerConfig.image_guidance_scale=-1.0 must be > 0"),
    (dict(num_steps=0), r"SamplerConfig.num_steps=0 must be in \[1, 1000\]"),
    (dict(solver="heun"), r"SamplerConfig.solver='heun' is not one of"),
])
def test_bad_sampler_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kwargs)


def test_bad_sampling_input(pair):
    _, ours = pair
    pos = Conditioning(*map(jnp.asarray, conditioning(0)))
    with pytest.raises(ValueError, match=r"guidance_scale=7.5 needs `negative` conditioning"):
        sample_latents(ours, pos, latent_size=(SIZE, SIZE))
    with pytest.raises(ValueError, match=r"sample height/width \(6, 8\) must be multiples of 4"):
        sample_latents(ours, pos, config=SamplerConfig(guidance_scale=1.0), latent_size=(6, 8))
    with pytest.raises(ValueError, match=r"context must be \[1, T, 24\]"):
        sample_latents(ours, pos._replace(context=jnp.zeros((1, 5, 16))), config=SamplerConfig(guidance_scale=1.0),
                       latent_size=(SIZE, SIZE))
    with pytest.raises(ValueError, match=r"cond_latents given but the U-Net has in_channels=4"):
        sample_latents(ours, pos, config=SamplerConfig(guidance_scale=1.0), latent_size=(SIZE, SIZE),
                       cond_latents=jnp.zeros((1, SIZE, SIZE, 4)))
