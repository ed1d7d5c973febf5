"""The SEED-X de-tokenizer: ViT-space features -> image (stage 1), + a condition image (stage 2).

Stage 1 (`SDXLAdapter`): ResamplerXLV2 -> SDXL U-Net, classifier-free guidance against the
ViT features of an all-zero normalised image (docs/detokenizer.md). Stage 2
(`SDXLAdapterWithLatentImage`): the U-Net takes 8 channels, the last 4 being the VAE posterior mean
of the condition image WITHOUT the scaling factor, with 3-way guidance (as official). Checkpoint keys are
`resampler.*` and `unet.*` on top of the SDXL base U-Net and VAE (`detokenizer.params.load_detokenizer`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.detokenizer.resampler_xl import ResamplerXL, ResamplerXLConfig
from seedx_jax.diffusion.sampling import Conditioning, SamplerConfig, sample_latents
from seedx_jax.diffusion.unet import UNet2DConditionModel, UNetConfig
from seedx_jax.diffusion.vae import AutoencoderKL, VAEConfig
from seedx_jax.vision.features import vit_down
from seedx_jax.vision.vit import QwenViT


@dataclasses.dataclass(frozen=True)
class DetokenizerConfig(ConfigBase):
    resampler: ResamplerXLConfig = ResamplerXLConfig()
    unet: UNetConfig = UNetConfig()
    vae: VAEConfig = VAEConfig()

    def __post_init__(self):
        r, u = self.resampler, self.unet
        if r.output1_dim + r.output2_dim != u.cross_attention_dim or r.output2_dim != u.pooled_dim:
            raise ValueError(f"DetokenizerConfig: resampler outputs ({r.output1_dim} + {r.output2_dim}, pooled "
                             f"{r.output2_dim}) do not fit unet cross_attention_dim={u.cross_attention_dim}, "
                             f"pooled_dim={u.pooled_dim}")
        if u.out_channels != self.vae.latent_channels or u.in_channels not in (u.out_channels, 2 * u.out_channels):
            raise ValueError(f"DetokenizerConfig: unet in/out channels ({u.in_channels}, {u.out_channels}) do not "
                             f"fit vae latent_channels={self.vae.latent_channels}")

    @property
    def edits(self) -> bool:
        return self.unet.in_channels == 2 * self.unet.out_channels

    @property
    def pixel_factor(self) -> int:
        """Image sides must be multiples of this (VAE x U-Net downsampling)."""
        return self.vae.downsample_factor * self.unet.downsample_factor


_TINY_RESAMPLER = ResamplerXLConfig.preset("tiny", output1_dim=4, output2_dim=20)
DetokenizerConfig.PRESETS = {
    "stage1": DetokenizerConfig(),
    "stage2": DetokenizerConfig(unet=UNetConfig.preset("sdxl_edit")),
    "tiny": DetokenizerConfig(resampler=_TINY_RESAMPLER, unet=UNetConfig.preset("tiny"), vae=VAEConfig.preset("tiny")),
    "tiny_edit": DetokenizerConfig(resampler=_TINY_RESAMPLER, unet=UNetConfig.preset("tiny", in_channels=8),
                                   vae=VAEConfig.preset("tiny")),
}


def negative_features(vit: QwenViT, *, pooled: bool = True) -> jax.Array:
    """The guidance negative: ViT of an all-zero normalised image `[1, 64 or 256, output_dim]`.

    `pooled=True` (path A, features regressed by the LLM) applies `vit_down` to 64 tokens; path B
    (reconstructing an image's own ViT features) uses all 256 (as the official scripts).
    """
    s = vit.config.image_size
    feats = _vit_forward(vit, jnp.zeros((1, s, s, 3), jnp.float32))
    return vit_down(feats) if pooled else feats


def to_uint8(images: jax.Array) -> np.ndarray:
    """`[N, H, W, 3]` in about [-1, 1] -> uint8 as diffusers: round(clamp(x / 2 + 0.5, 0, 1) * 255)."""
    return np.asarray(jnp.round(jnp.clip(images / 2 + 0.5, 0, 1) * 255)).astype(np.uint8)


_vit_forward = nnx.jit(QwenViT.__call__)  # module level: one compile per view shape, reused across calls


@nnx.jit
def _condition(resampler, features, negative):
    embeds, pooled = resampler(jnp.concatenate([features, negative], axis=0))  # as the official path A
    n = features.shape[0]
    return (embeds[:n], pooled[:n]), (embeds[n:], pooled[n:])


@nnx.jit
def _decode(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor)


@nnx.jit
def _encode_mean(vae, images):
    return vae.encode(images)[0]


class Detokenizer(nnx.Module):
    def __init__(self, cfg: DetokenizerConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.resampler = ResamplerXL(cfg.resampler, rngs=rngs)
        self.unet = UNet2DConditionModel(cfg.unet, rngs=rngs)
        self.vae = AutoencoderKL(cfg.vae, rngs=rngs)

    def _check(self, features, negative, height: int, width: int, condition_images) -> None:
        cfg, f = self.config, self.config.pixel_factor
        dim = cfg.resampler.embedding_dim
        for name, x in (("features", features), ("negative", negative)):
            if x.ndim != 3 or x.shape[-1] != dim:
                raise ValueError(f"{name} must be [N, L, {dim}] ViT-space features, got shape {tuple(x.shape)}")
        if negative.shape[0] not in (1, features.shape[0]):
            raise ValueError(f"negative batch {negative.shape[0]} must be 1 or match features batch {features.shape[0]}")
        for name, v in (("height", height), ("width", width)):
            if v <= 0 or v % f:
                raise ValueError(f"{name}={v} must be a positive multiple of {f} (VAE x U-Net downsampling)")
        if condition_images is not None:
            if not cfg.edits:
                raise ValueError("condition_images need a stage-2 de-tokenizer (unet in_channels=8)")
            want = (features.shape[0], height, width, 3)
            if tuple(condition_images.shape) != want:
                raise ValueError(f"condition_images must be {want} (NHWC, resized to height x width), "
                                 f"got {tuple(condition_images.shape)}")

    def generate(self, features: jax.Array, negative: jax.Array, *, height: int = 1024, width: int = 1024,
                 sampler: SamplerConfig = SamplerConfig(), condition_images: jax.Array | None = None,
                 noise: jax.Array | None = None, seed: int = 0, progress: bool = False) -> jax.Array:
        """features `[N, L, 4096]` (64 LLM-regressed or 256 ViT tokens), negative `[1 or N, L', 4096]`
        (`negative_features`), condition_images `[N, height, width, 3]` in [0, 1] (stage 2) ->
        images `[N, height, width, 3]` in about [-1, 1] (`to_uint8` for pixels)."""
        self._check(features, negative, height, width, condition_images)
        n = features.shape[0]
        negative = jnp.broadcast_to(negative, (n, *negative.shape[1:]))
        (pos_embeds, pos_pooled), (neg_embeds, neg_pooled) = _condition(self.resampler, features, negative)
        time_ids = jnp.tile(jnp.asarray([[height, width, 0, 0, height, width]], jnp.float32), (n, 1))
        cond_latents = None
        if condition_images is not None:  # posterior mean, no scaling factor (as official)
            cond_latents = _encode_mean(self.vae, 2 * condition_images.astype(jnp.float32) - 1)
        f = self.config.vae.downsample_factor
        latents = sample_latents(self.unet, Conditioning(pos_embeds, pos_pooled, time_ids),
                                 Conditioning(neg_embeds, neg_pooled, time_ids), config=sampler, noise=noise,
                                 latent_size=(height // f, width // f), seed=seed, cond_latents=cond_latents,
                                 progress=progress)
        return _decode(self.vae, latents)

    def reconstruct(self, vit: QwenViT, images: jax.Array, **generate_kwargs) -> jax.Array:
        """Path B of `get_image_embeds` (the official reconstruction demos): `image_transform`-ed views
        `[N, S, S, 3]` -> all 256 ViT tokens -> `generate` against the unpooled zero-image negative.
        Pass `condition_images` too for a stage-2 reconstruction."""
        features = _vit_forward(vit, images)
        return self.generate(features, negative_features(vit, pooled=False), **generate_kwargs)
