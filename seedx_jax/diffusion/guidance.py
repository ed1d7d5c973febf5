"""Guidance: classifier-free (stage 1) and the SEED-X-Edit 3-way rule (stage 2); docs/detokenizer.md."""
from __future__ import annotations

import jax


def classifier_free_guidance(eps_uncond: jax.Array, eps_cond: jax.Array, scale: float) -> jax.Array:
    """`eps_u + scale * (eps_c - eps_u)` (SDXL pipeline; the negative is the ViT zero-image branch)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def edit_guidance(eps_text: jax.Array, eps_image: jax.Array, eps_uncond: jax.Array, sample: jax.Array,
                  sigma: jax.Array, text_scale: float = 7.5, image_scale: float = 1.5) -> jax.Array:
    """SEED-X-Edit 3-way guidance, in x0 space as the official pipeline_stable_diffusion_xl_t2i_edit.py.

    Branches: text = (positive features, condition latent), image = (negative, condition latent),
    uncond = (negative, zeros). `sample` is the sigma-form latent. Returns the guided epsilon.
    """
    x0_t, x0_i, x0_u = (sample - sigma * e for e in (eps_text, eps_image, eps_uncond))
    x0 = x0_u + text_scale * (x0_t - x0_i) + image_scale * (x0_i - x0_u)
    return (x0 - sample) / (-sigma)
