"""The SEED-X de-tokenizer: ViT-space features -> image (stage 1), + a condition image (stage 2).

Stage 1 (`SDXLAdapter`): ResamplerXLV2 -> SDXL U-Net, classifier-free guidance against the
ViT features of an all-zero normalised image (docs/detokenizer.md). Stage 2
(`SDXLAdapterWithLatentImage`): the U-Net takes 8 channels, the last 4 being the VAE posterior mean
of the condition image WITHOUT the scaling factor, with 3-way guidance (as official). Checkpoint keys are
`resampler.*` and `unet.*` on top of the SDXL base U-Net and VAE (`detokenizer.params.load_detokenizer`).
"""
from __future__ import annotations

import dataclasses
import functools
import operator
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.detokenizer.resampler_xl import ResamplerXL, ResamplerXLConfig
from seedx_jax.diffusion import sampling
from seedx_jax.diffusion.sampling import (Conditioning, SamplerConfig, SamplerTables, check_seed, draw_noise,
                                          guidance_mode, sampler_tables, user_array)
from seedx_jax.diffusion.unet import UNet2DConditionModel, UNetConfig
from seedx_jax.diffusion.vae import AutoencoderKL, VAEConfig
from seedx_jax.nn.bound import GraphSpec, bind
from seedx_jax.numerics import nonfinite_counts
from seedx_jax.vision.encode import check_views
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
    """The guidance negative: ViT of an all-zero normalised image `[1, 64 or 256, output_dim]` float32.

    `pooled=True` (path A, features regressed by the LLM) applies `vit_down` to 64 tokens; path B
    (reconstructing an image's own ViT features) uses all 256 (as the official scripts). A constant
    of the ViT's weights: computed once and kept until a weight changes.

    Raises:
      ValueError: `vit` is not a `QwenViT`, or `pooled` is not a bool.
    """
    _check_vit(vit)
    if not isinstance(pooled, bool):
        raise ValueError(f"pooled={pooled!r} must be True or False")
    bound = bind(vit)
    values = bound.values()
    cached = _NEGATIVES.setdefault(vit, {})
    weights, features = cached.get(pooled, ((), None))
    if len(weights) != len(values) or not all(map(operator.is_, weights, values)):
        s = vit.config.image_size
        features = _vit_forward(bound.spec, values, np.zeros((1, s, s, 3), np.float32))
        features = vit_down(features) if pooled else features
        cached[pooled] = (values, features)
    return features


_NEGATIVES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # vit -> {pooled: (weights, features)}


def to_uint8(images: jax.Array) -> np.ndarray:
    """`[N, H, W, 3]` floats in about [-1, 1] (jax or numpy) -> uint8 `[N, H, W, 3]` as diffusers:
    round(clamp(x / 2 + 0.5, 0, 1) * 255).

    Raises:
      ValueError: `images` is not a float `[N, H, W, 3]` array (uint8 pixels would come back white),
        or holds NaN / Inf (they would come back as arbitrary pixels).
    """
    if not isinstance(images, (jax.Array, np.ndarray)) or not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be a float jax or numpy array in [-1, 1], got "
                         f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images has shape {tuple(images.shape)}; to_uint8 takes [N, H, W, 3]")
    nan, inf = nonfinite_counts(images)
    if nan or inf:
        raise ValueError(f"images holds {nan} NaN and {inf} infinite values")
    return np.asarray(jnp.round(jnp.clip(images / 2 + 0.5, 0, 1) * 255)).astype(np.uint8)


def _check_vit(vit) -> None:
    if not isinstance(vit, QwenViT):
        raise ValueError(f"vit must be a QwenViT, got {type(vit).__name__}")


def _features(x, name: str, dim: int) -> jax.Array:
    x = user_array(x, name)
    if x.ndim != 3 or 0 in x.shape or x.shape[-1] != dim:
        raise ValueError(f"{name} must be [N, L, {dim}] ViT-space features, got shape {tuple(x.shape)}")
    return x


# Jitted blocks on modules split once (`seedx_jax.nn.bound`). `_generate_images` calls them by
# module lookup while tracing, so the whole request compiles to one program.
@functools.partial(jax.jit, static_argnames=("vit",))
def _vit_forward(vit: GraphSpec, values, images):
    return vit.merge(values)(images)


# The positive and negative features are resampled apart (the official path A stacks them): the
# ResamplerXL works per sample, and apart they may differ in length and the negative stays 1 row.
@functools.partial(jax.jit, static_argnames=("resampler",))
def _resample(resampler: GraphSpec, values, features):
    return resampler.merge(values)(features)


@functools.partial(jax.jit, static_argnames=("vae",))
def _decode(vae: GraphSpec, values, latents):
    model = vae.merge(values)
    return model.decode(latents / model.config.scaling_factor)


@functools.partial(jax.jit, static_argnames=("vae",))
def _encode_mean(vae: GraphSpec, values, images):
    return vae.merge(values).encode(images)[0]


@functools.partial(jax.jit, static_argnames=("models", "mode", "solver", "edits", "progress"))
def _generate_images(models, values, features, negative, condition_images, noise, time_ids, tables: SamplerTables,
                     *, mode, solver, edits, progress):
    """Resample -> (stage 2) condition latent -> the sampling loop -> VAE decode, one dispatch.
    `models` / `values`: the (resampler, unet, vae) specs and arrays."""
    resampler, unet, vae = models
    r_values, u_values, v_values = values
    n = features.shape[0]
    pos_embeds, pos_pooled = _resample(resampler, r_values, features)
    neg_embeds, neg_pooled = (jnp.broadcast_to(x, (n, *x.shape[1:])) for x in _resample(resampler, r_values, negative))
    cond_latents = None
    if condition_images is not None:  # posterior mean, no scaling factor (as official)
        cond_latents = _encode_mean(vae, v_values, 2 * condition_images - 1)
    elif edits:
        cond_latents = jnp.zeros_like(noise)
    latents = sampling._denoise(unet, u_values, noise, Conditioning(pos_embeds, pos_pooled, time_ids),
                                Conditioning(neg_embeds, neg_pooled, time_ids), cond_latents, tables, mode=mode,
                                solver=solver, progress=progress)
    return _decode(vae, v_values, latents)


class Detokenizer(nnx.Module):
    def __init__(self, cfg: DetokenizerConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.resampler = ResamplerXL(cfg.resampler, rngs=rngs)
        self.unet = UNet2DConditionModel(cfg.unet, rngs=rngs)
        self.vae = AutoencoderKL(cfg.vae, rngs=rngs)

    def _check_request(self, n: int, height, width, sampler, condition_images, noise, seed
                       ) -> tuple[jax.Array | None, jax.Array | None]:
        """The checks `generate` and `reconstruct` share, for `n` images -> (condition_images, noise)
        as float32 arrays (or None)."""
        cfg, f = self.config, self.config.pixel_factor
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % f:
                raise ValueError(f"{name}={v!r} must be a positive multiple of {f} (VAE x U-Net downsampling)")
        if not isinstance(sampler, SamplerConfig):
            raise ValueError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
        check_seed(seed)
        if condition_images is not None:
            if not cfg.edits:
                raise ValueError("condition_images need a stage-2 de-tokenizer (unet in_channels=8)")
            condition_images = user_array(condition_images, "condition_images")
            want = (n, height, width, 3)
            if tuple(condition_images.shape) != want:
                raise ValueError(f"condition_images must be {want} (NHWC, resized to height x width), "
                                 f"got {tuple(condition_images.shape)}")
            pixels = np.asarray(condition_images)
            if pixels.min() < 0 or pixels.max() > 1:  # e.g. [-1, 1] or 0..255 pixels: a wrong condition latent
                raise ValueError(f"condition_images hold values in [{pixels.min()}, {pixels.max()}]; "
                                 f"generate takes [0, 1]")
        if noise is not None:
            noise = user_array(noise, "noise")
            d = cfg.vae.downsample_factor
            want = (n, height // d, width // d, cfg.unet.out_channels)
            if tuple(noise.shape) != want:
                raise ValueError(f"noise has shape {tuple(noise.shape)}; {width}x{height} needs {want} (NHWC)")
        return condition_images, noise

    def generate(self, features: jax.Array, negative: jax.Array, *, height: int = 1024, width: int = 1024,
                 sampler: SamplerConfig = SamplerConfig(), condition_images: jax.Array | None = None,
                 noise: jax.Array | None = None, seed: int = 0, progress: bool = False) -> jax.Array:
        """features `[N, L, 4096]` (64 LLM-regressed or 256 ViT tokens), negative `[1 or N, L', 4096]`
        (`negative_features`), condition_images `[N, height, width, 3]` in [0, 1] (stage 2), noise
        `[N, height / 8, width / 8, 4]` (default: drawn from `seed`, an int in [0, 2**32)) ->
        images `[N, height, width, 3]` float32 in about [-1, 1] (`to_uint8` for pixels). Arrays are
        jax or numpy, any float dtype (computed in float32); height and width are ints.

        Raises:
          ValueError: before anything is traced, naming the argument: arrays that are not float, of
            another shape, or hold NaN / Inf; condition images outside [0, 1] or given to stage 1;
            sides that are not positive multiples of `config.pixel_factor`; a bad seed or sampler.
        """
        dim = self.config.resampler.embedding_dim
        features, negative = _features(features, "features", dim), _features(negative, "negative", dim)
        n = features.shape[0]
        if negative.shape[0] not in (1, n):
            raise ValueError(f"negative batch {negative.shape[0]} must be 1 or match features batch {n}")
        condition_images, noise = self._check_request(n, height, width, sampler, condition_images, noise, seed)
        return self._generate(features, negative, height, width, sampler, condition_images, noise, seed, progress)

    def _generate(self, features, negative, height, width, sampler, condition_images, noise, seed, progress):
        cfg, n = self.config, features.shape[0]
        f = cfg.vae.downsample_factor
        bound = [bind(m) for m in (self.resampler, self.unet, self.vae)]
        time_ids = np.tile(np.asarray([[height, width, 0, 0, height, width]], np.float32), (n, 1))
        if noise is None:
            noise = draw_noise(seed, (n, height // f, width // f, cfg.unet.out_channels))
        return _generate_images(tuple(b.spec for b in bound), [b.values() for b in bound], features, negative,
                                condition_images, noise, time_ids, sampler_tables(sampler),
                                mode=guidance_mode(sampler, cfg.edits), solver=sampler.solver, edits=cfg.edits,
                                progress=progress)

    def reconstruct(self, vit: QwenViT, images: jax.Array, *, height: int = 1024, width: int = 1024,
                    sampler: SamplerConfig = SamplerConfig(), condition_images: jax.Array | None = None,
                    noise: jax.Array | None = None, seed: int = 0, progress: bool = False) -> jax.Array:
        """Path B of `get_image_embeds` (the official reconstruction demos): `image_transform`-ed views
        `[N, S, S, 3]` (float, S a multiple of the ViT patch size) -> all 256 ViT tokens -> `generate`
        against the unpooled zero-image negative. Pass `condition_images` too for a stage-2
        reconstruction; the other arguments are `generate`'s.

        Raises:
          ValueError: before the ViT runs: `vit` not a `QwenViT` of this de-tokenizer's feature width,
            `images` not float `[N, S, S, 3]` views, or any of `generate`'s errors.
        """
        _check_vit(vit)
        dim = self.config.resampler.embedding_dim
        if vit.config.output_dim != dim:
            raise ValueError(f"vit output_dim={vit.config.output_dim} does not match the de-tokenizer's "
                             f"embedding_dim={dim}")
        views = check_views(images, vit.config.patch_size, "images")
        condition_images, noise = self._check_request(len(views), height, width, sampler, condition_images, noise,
                                                      seed)
        bound = bind(vit)
        features = _vit_forward(bound.spec, bound.values(), views)
        return self._generate(features, negative_features(vit, pooled=False), height, width, sampler,
                              condition_images, noise, seed, progress)
