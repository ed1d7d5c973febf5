"""SDXL `AutoencoderKL` (diffusers semantics, NHWC): encode to the posterior, decode latents.

The scaling factor (SDXL 0.13025) is not applied here: callers multiply latents before the U-Net
and divide before `decode`. SEED-X's stage-2 condition latent is the posterior mean WITHOUT it
(docs/detokenizer.md#stage-2-latent-image-conditioning).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.diffusion.blocks import Downsample2D, ResnetBlock2D, SpatialSelfAttention, Upsample2D
from seedx_jax.diffusion.diffusers_config import read_options
from seedx_jax.nn import Conv2d, GroupNorm
from seedx_jax.nn.bound import GraphSpec, bind


@dataclasses.dataclass(frozen=True)
class VAEConfig(ConfigBase):
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    eps: float = 1e-6
    scaling_factor: float = 0.13025
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(f"VAEConfig.block_out_channels has {c}, not divisible by "
                                 f"norm_num_groups={self.norm_num_groups}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], **overrides) -> "VAEConfig":
        """From a diffusers `AutoencoderKL` config (`vae/config.json`); `overrides` set our own fields
        (dtype, ...). `eps` is not in the file: diffusers fixes it at 1e-6, our default.

        Raises:
          ValueError: an option our VAE does not implement (e.g. a shift_factor or latents_mean, other
            block types), named with its value; or sizes that do not fit.
        """
        o = read_options("diffusers VAE", config, _DIFFUSERS_DEFAULTS, _DIFFUSERS_SUPPORTED, _DIFFUSERS_IGNORED)
        levels = len(o["block_out_channels"])
        for name, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            if list(o[name]) != [block] * levels:
                raise ValueError(f"diffusers VAE option {name}={o[name]!r} is not supported (only {block}, one per "
                                 f"block_out_channels entry)")
        return cls(in_channels=o["in_channels"], out_channels=o["out_channels"],
                   block_out_channels=tuple(o["block_out_channels"]), layers_per_block=o["layers_per_block"],
                   latent_channels=o["latent_channels"], norm_num_groups=o["norm_num_groups"],
                   scaling_factor=float(o["scaling_factor"]), **overrides)


# diffusers' AutoencoderKL defaults: a config.json may leave any option out
_DIFFUSERS_DEFAULTS = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
    block_out_channels=(64,), layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=32,
    scaling_factor=0.18215, shift_factor=None, latents_mean=None, latents_std=None, use_quant_conv=True,
    use_post_quant_conv=True, mid_block_add_attention=True)
# the options our VAE implements with SDXL's setting only (the latent statistics would change the scaling)
_DIFFUSERS_SUPPORTED = dict(act_fn=("silu",), shift_factor=(None,), latents_mean=(None,), latents_std=(None,),
                            use_quant_conv=(True,), use_post_quant_conv=(True,), mid_block_add_attention=(True,))
# the pipeline's default image size; whether diffusers' fp16 pipelines run the VAE in fp32
_DIFFUSERS_IGNORED = ("sample_size", "force_upcast")


VAEConfig.PRESETS = {
    "sdxl": VAEConfig(),
    "tiny": VAEConfig(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8),
}


def _kw(cfg: VAEConfig, rngs):
    return dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)


class MidBlock(nnx.Module):
    def __init__(self, cfg: VAEConfig, channels: int, *, rngs: nnx.Rngs):
        kw = dict(groups=cfg.norm_num_groups, eps=cfg.eps, **_kw(cfg, rngs))
        self.resnets = nnx.List([ResnetBlock2D(channels, channels, **kw) for _ in range(2)])
        self.attentions = nnx.List([SpatialSelfAttention(channels, **kw)])

    def __call__(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class EncoderBlock(nnx.Module):
    def __init__(self, cfg: VAEConfig, cin: int, cout: int, downsample: bool, *, rngs: nnx.Rngs):
        kw = _kw(cfg, rngs)
        self.resnets = nnx.List([ResnetBlock2D(cin if i == 0 else cout, cout, groups=cfg.norm_num_groups,
                                               eps=cfg.eps, **kw) for i in range(cfg.layers_per_block)])
        self.downsamplers = nnx.List([Downsample2D(cout, asymmetric=True, **kw)] if downsample else [])

    def __call__(self, x):
        for layer in [*self.resnets, *self.downsamplers]:
            x = layer(x)
        return x


class DecoderBlock(nnx.Module):
    def __init__(self, cfg: VAEConfig, cin: int, cout: int, upsample: bool, *, rngs: nnx.Rngs):
        kw = _kw(cfg, rngs)
        self.resnets = nnx.List([ResnetBlock2D(cin if i == 0 else cout, cout, groups=cfg.norm_num_groups,
                                               eps=cfg.eps, **kw) for i in range(cfg.layers_per_block + 1)])
        self.upsamplers = nnx.List([Upsample2D(cout, **kw)] if upsample else [])

    def __call__(self, x):
        for layer in [*self.resnets, *self.upsamplers]:
            x = layer(x)
        return x


class Encoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        ch, kw = cfg.block_out_channels, _kw(cfg, rngs)
        self.conv_in = Conv2d(cfg.in_channels, ch[0], 3, padding=1, **kw)
        self.down_blocks = nnx.List([
            EncoderBlock(cfg, ch[max(i - 1, 0)], ch[i], i < len(ch) - 1, rngs=rngs) for i in range(len(ch))])
        self.mid_block = MidBlock(cfg, ch[-1], rngs=rngs)
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, ch[-1], eps=cfg.eps, param_dtype=kw["param_dtype"])
        self.conv_out = Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1, **kw)

    def __call__(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        ch, kw = tuple(reversed(cfg.block_out_channels)), _kw(cfg, rngs)
        self.conv_in = Conv2d(cfg.latent_channels, ch[0], 3, padding=1, **kw)
        self.mid_block = MidBlock(cfg, ch[0], rngs=rngs)
        self.up_blocks = nnx.List([
            DecoderBlock(cfg, ch[max(i - 1, 0)], ch[i], i < len(ch) - 1, rngs=rngs) for i in range(len(ch))])
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, ch[-1], eps=cfg.eps, param_dtype=kw["param_dtype"])
        self.conv_out = Conv2d(ch[-1], cfg.out_channels, 3, padding=1, **kw)

    def __call__(self, z):
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        kw = _kw(cfg, rngs)
        self.encoder = Encoder(cfg, rngs=rngs)
        self.decoder = Decoder(cfg, rngs=rngs)
        self.quant_conv = Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1, **kw)
        self.post_quant_conv = Conv2d(cfg.latent_channels, cfg.latent_channels, 1, **kw)

    def _check(self, x: jax.Array, name: str, channels: int, factor: int) -> None:
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(f"{name} must be [N, H, W, {channels}] (NHWC), got shape {x.shape}")
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"{name} height/width {x.shape[1:3]} must be multiples of {factor}")

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """images `[N, H, W, 3]` in [-1, 1] -> posterior (mean, logvar), each `[N, H/f, W/f, latent]`."""
        self._check(images, "images", self.config.in_channels, self.config.downsample_factor)
        moments = self.quant_conv(self.encoder(images))
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def sample(self, mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
        """A draw from the diagonal Gaussian posterior."""
        return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)

    def decode(self, latents: jax.Array) -> jax.Array:
        """latents `[N, h, w, latent]` (unscaled) -> images `[N, h*f, w*f, 3]` in about [-1, 1]."""
        self._check(latents, "latents", self.config.latent_channels, 1)
        return self.decoder(self.post_quant_conv(latents))

    def decode_tiled(self, latents: jax.Array, tile_latent_size: int = 128, overlap: float = 0.25) -> jax.Array:
        """`decode` in overlapping tiles for images too large to decode at once (diffusers `tiled_decode`).

        Tiles of `tile_latent_size` latents (SDXL: 128 = 1024 px) start every `(1 - overlap)` of a tile;
        each is decoded by one jitted call (at most 4 tile shapes compile), then blended linearly over
        `overlap` of a tile with the tile above and the tile to the left, and cropped. Same result as
        diffusers; not the same as `decode`, whose receptive field spans the whole image.
        """
        self._check(latents, "latents", self.config.latent_channels, 1)
        if tile_latent_size < 1 or not 0 <= overlap < 1:
            raise ValueError(f"decode_tiled: tile_latent_size={tile_latent_size} must be >= 1 and overlap={overlap} "
                             "in [0, 1)")
        f = self.config.downsample_factor
        stride = int(tile_latent_size * (1 - overlap))
        tile_px = tile_latent_size * f
        blend, keep = int(tile_px * overlap), tile_px - int(tile_px * overlap)
        h, w = latents.shape[1:3]
        bound = bind(self)
        rows = [[_jit_decode(bound.spec, bound.values(), latents[:, i:i + tile_latent_size, j:j + tile_latent_size])
                 for j in range(0, w, stride)] for i in range(0, h, stride)]
        out_rows = []
        for i, row in enumerate(rows):
            for j in range(len(row)):  # blended tiles replace the originals, as diffusers does in place
                if i > 0:
                    row[j] = _blend(rows[i - 1][j], row[j], blend, axis=1)
                if j > 0:
                    row[j] = _blend(row[j - 1], row[j], blend, axis=2)
            out_rows.append(jnp.concatenate([t[:, :keep, :keep] for t in row], axis=2))
        return jnp.concatenate(out_rows, axis=1)


@functools.partial(jax.jit, static_argnames=("vae",))  # module level: compiled tile shapes are reused across calls
def _jit_decode(vae: GraphSpec, values, latents):
    return vae.merge(values).decode(latents)


def _blend(prev: jax.Array, tile: jax.Array, extent: int, axis: int) -> jax.Array:
    """Cross-fade the first `extent` rows/columns of `tile` from the last ones of `prev` (linear ramp)."""
    extent = min(prev.shape[axis], tile.shape[axis], extent)
    if extent == 0:
        return tile
    ramp = (jnp.arange(extent, dtype=jnp.float32) / extent).reshape([-1 if a == axis else 1 for a in range(4)])
    head = jax.lax.slice_in_dim(tile, 0, extent, axis=axis)
    tail = jax.lax.slice_in_dim(prev, prev.shape[axis] - extent, prev.shape[axis], axis=axis)
    mixed = (tail * (1 - ramp) + head * ramp).astype(tile.dtype)
    return jnp.concatenate([mixed, jax.lax.slice_in_dim(tile, extent, tile.shape[axis], axis=axis)], axis=axis)
