"""SDXL `UNet2DConditionModel` (diffusers semantics, NHWC): predicts the noise of a latent.

Conditioning (docs/detokenizer.md): `context` = the ResamplerXLV2 prompt embeddings `[N, 64, 2048]`
(cross-attention, see `transformer2d.py`), and the SDXL `text_time` added embedding built from the
pooled embedding `[N, 1280]` and 6 size/crop ids, added to the timestep embedding that every ResNet
block receives. Stage 2 (`SDXLAdapterWithLatentImage`) is the same network with `in_channels=8`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.diffusion.blocks import Downsample2D, ResnetBlock2D, Upsample2D
from seedx_jax.diffusion.diffusers_config import read_options
from seedx_jax.diffusion.embeddings import TimestepEmbedding, timestep_features
from seedx_jax.diffusion.transformer2d import Transformer2D
from seedx_jax.nn import Conv2d, GroupNorm, remat_policy
from seedx_jax.sharding import shard_activation

DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")
NUM_TIME_IDS = 6  # (original h, w, crop top, left, target h, w)


@dataclasses.dataclass(frozen=True)
class UNetConfig(ConfigBase):
    """Field names follow the diffusers config; `num_attention_heads` is what the SDXL config calls
    `attention_head_dim` (diffusers reads it as the head count: 64-wide heads)."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 2
    transformer_layers_per_block: tuple[int, ...] = (1, 2, 10)
    num_attention_heads: tuple[int, ...] = (5, 10, 20)
    cross_attention_dim: int = 2048
    pooled_dim: int = 1280  # `text_embeds`; with the time ids: projection_class_embeddings_input_dim 2816
    addition_time_embed_dim: int = 256
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"
    scan_layers: bool = True  # scan the transformer blocks of each attention module
    remat: str = "none"  # per down/mid/up block: none | full | dots | dots_no_batch

    def __post_init__(self):
        levels = len(self.block_out_channels)
        for name in ("down_block_types", "up_block_types", "transformer_layers_per_block", "num_attention_heads"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"UNetConfig.{name} has {len(getattr(self, name))} entries, "
                                 f"block_out_channels has {levels}")
        for name, allowed in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
            if bad := [t for t in getattr(self, name) if t not in allowed]:
                raise ValueError(f"UNetConfig.{name}: {bad} not supported; use {allowed}")
        for c, h in zip(self.block_out_channels, self.num_attention_heads):
            if c % self.norm_num_groups or c % h:
                raise ValueError(f"UNetConfig: channels {c} must divide by norm_num_groups="
                                 f"{self.norm_num_groups} and heads={h}")
        self.check_compute_options()

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], **overrides) -> "UNetConfig":
        """From a diffusers `UNet2DConditionModel` config (`unet/config.json`); `overrides` set our own
        fields (dtype, remat, ...). `attention_head_dim` is read as the head count, as diffusers does
        (`num_attention_heads` must be unset there).

        Raises:
          ValueError: an option our U-Net does not implement (e.g. use_linear_projection=False,
            addition_embed_type other than "text_time"), named with its value; or sizes that do not fit.
        """
        o = read_options("diffusers U-Net", config, _DIFFUSERS_DEFAULTS, _DIFFUSERS_SUPPORTED, _DIFFUSERS_IGNORED)
        levels = len(o["block_out_channels"])
        for name in ("layers_per_block", "cross_attention_dim", "addition_time_embed_dim",
                     "projection_class_embeddings_input_dim"):
            if not isinstance(o[name], int):
                raise ValueError(f"diffusers U-Net option {name}={o[name]!r} is not supported (only one int)")
        return cls(in_channels=o["in_channels"], out_channels=o["out_channels"],
                   block_out_channels=tuple(o["block_out_channels"]), down_block_types=tuple(o["down_block_types"]),
                   up_block_types=tuple(o["up_block_types"]), layers_per_block=o["layers_per_block"],
                   transformer_layers_per_block=_per_level("transformer_layers_per_block",
                                                           o["transformer_layers_per_block"], levels),
                   num_attention_heads=_per_level("attention_head_dim", o["attention_head_dim"], levels),
                   cross_attention_dim=o["cross_attention_dim"], addition_time_embed_dim=o["addition_time_embed_dim"],
                   pooled_dim=o["projection_class_embeddings_input_dim"] - NUM_TIME_IDS * o["addition_time_embed_dim"],
                   norm_num_groups=o["norm_num_groups"], norm_eps=float(o["norm_eps"]),
                   flip_sin_to_cos=bool(o["flip_sin_to_cos"]), freq_shift=float(o["freq_shift"]), **overrides)


def _per_level(name: str, value, levels: int) -> tuple[int, ...]:
    """A diffusers option given once for all levels or once per level."""
    if isinstance(value, int):
        return (value,) * levels
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f"diffusers U-Net option {name}={value!r} is not supported (an int, or one int per level)")


# diffusers' UNet2DConditionModel defaults: a config.json may leave any option out
_DIFFUSERS_DEFAULTS = dict(
    in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, only_cross_attention=False,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    dropout=0.0, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1280,
    transformer_layers_per_block=1, reverse_transformer_layers_per_block=None, encoder_hid_dim=None,
    encoder_hid_dim_type=None, attention_head_dim=8, num_attention_heads=None, dual_cross_attention=False,
    use_linear_projection=False, class_embed_type=None, addition_embed_type=None, addition_time_embed_dim=None,
    num_class_embeds=None, upcast_attention=False, resnet_time_scale_shift="default", resnet_skip_time_act=False,
    resnet_out_scale_factor=1.0, time_embedding_type="positional", time_embedding_dim=None,
    time_embedding_act_fn=None, timestep_post_act=None, time_cond_proj_dim=None, conv_in_kernel=3, conv_out_kernel=3,
    projection_class_embeddings_input_dim=None, attention_type="default", class_embeddings_concat=False,
    mid_block_only_cross_attention=None, cross_attention_norm=None)
# the options our U-Net implements with SDXL's setting only
_DIFFUSERS_SUPPORTED = dict(
    center_input_sample=(False,), mid_block_type=("UNetMidBlock2DCrossAttn",), only_cross_attention=(False,),
    downsample_padding=(1,), mid_block_scale_factor=(1,), dropout=(0.0,), act_fn=("silu",),
    reverse_transformer_layers_per_block=(None,), encoder_hid_dim=(None,), encoder_hid_dim_type=(None,),
    num_attention_heads=(None,), dual_cross_attention=(False,), use_linear_projection=(True,), class_embed_type=(None,),
    addition_embed_type=("text_time",), num_class_embeds=(None,), upcast_attention=(None, False),
    resnet_time_scale_shift=("default",), resnet_skip_time_act=(False,), resnet_out_scale_factor=(1.0,),
    time_embedding_type=("positional",), time_embedding_dim=(None,), time_embedding_act_fn=(None,),
    timestep_post_act=(None,), time_cond_proj_dim=(None,), conv_in_kernel=(3,), conv_out_kernel=(3,),
    attention_type=("default",), class_embeddings_concat=(False,), mid_block_only_cross_attention=(None, False),
    cross_attention_norm=(None,))
# the pipeline's default image size; the head count of an added-embedding type other than text_time
_DIFFUSERS_IGNORED = ("sample_size", "addition_embed_type_num_heads")


UNetConfig.PRESETS = {
    "sdxl": UNetConfig(),
    "sdxl_edit": UNetConfig(in_channels=8),  # SEED-X stage 2: noisy latent + condition latent
    "tiny": UNetConfig(block_out_channels=(32, 64, 64), transformer_layers_per_block=(1, 2, 3),
                       num_attention_heads=(2, 4, 4), cross_attention_dim=24, pooled_dim=20,
                       addition_time_embed_dim=8, norm_num_groups=8),
}


class _Kw:
    """Constructor keywords shared by every sub-module of one U-Net."""

    def __init__(self, cfg: UNetConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.dtypes = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)

    def resnet(self, cin: int, cout: int) -> ResnetBlock2D:
        c = self.cfg
        return ResnetBlock2D(cin, cout, groups=c.norm_num_groups, eps=c.norm_eps, temb_channels=c.time_embed_dim,
                             **self.dtypes)

    def transformer(self, channels: int, level: int) -> Transformer2D:
        c = self.cfg
        return Transformer2D(channels, c.num_attention_heads[level], c.transformer_layers_per_block[level],
                             c.cross_attention_dim, groups=c.norm_num_groups, scan=c.scan_layers,
                             attention_impl=c.attention_impl, **self.dtypes)


class DownBlock(nnx.Module):
    """`layers_per_block` x (ResNet [+ Transformer2D]) [+ stride-2 conv]; every output is a skip."""

    def __init__(self, kw: _Kw, level: int, cin: int, cout: int, *, attention: bool, downsample: bool):
        n = kw.cfg.layers_per_block
        self.resnets = nnx.List([kw.resnet(cin if i == 0 else cout, cout) for i in range(n)])
        self.attentions = nnx.List([kw.transformer(cout, level) for _ in range(n)] if attention else [])
        self.downsamplers = nnx.List([Downsample2D(cout, asymmetric=False, **kw.dtypes)] if downsample else [])

    def __call__(self, x, temb, context):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions:
                x = self.attentions[i](x, context)
            skips.append(x)
        for down in self.downsamplers:
            x = down(x)
            skips.append(x)
        return x, skips


class MidBlock(nnx.Module):
    """ResNet -> Transformer2D -> ResNet at the lowest resolution."""

    def __init__(self, kw: _Kw, channels: int):
        self.resnets = nnx.List([kw.resnet(channels, channels) for _ in range(2)])
        self.attentions = nnx.List([kw.transformer(channels, len(kw.cfg.block_out_channels) - 1)])

    def __call__(self, x, temb, context):
        x = self.attentions[0](self.resnets[0](x, temb), context)
        return self.resnets[1](x, temb)


class UpBlock(nnx.Module):
    """`layers_per_block + 1` x (concat a skip -> ResNet [+ Transformer2D]) [+ nearest x2 and conv]."""

    def __init__(self, kw: _Kw, level: int, prev: int, cout: int, skip_channels: list[int], *, attention: bool,
                 upsample: bool):
        self.resnets = nnx.List([kw.resnet((prev if i == 0 else cout) + s, cout) for i, s in enumerate(skip_channels)])
        self.attentions = nnx.List([kw.transformer(cout, level) for _ in skip_channels] if attention else [])
        self.upsamplers = nnx.List([Upsample2D(cout, **kw.dtypes)] if upsample else [])

    def __call__(self, x, skips, temb, context):
        """`skips` in the order the down path produced them; consumed last first."""
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips[-1 - i]], axis=-1), temb)
            if self.attentions:
                x = self.attentions[i](x, context)
        for up in self.upsamplers:
            x = up(x)
        return x


class UNet2DConditionModel(nnx.Module):
    def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        kw = _Kw(cfg, rngs)
        ch, levels = cfg.block_out_channels, len(cfg.block_out_channels)
        self.conv_in = Conv2d(cfg.in_channels, ch[0], 3, padding=1, **kw.dtypes)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim, **kw.dtypes)
        self.add_embedding = TimestepEmbedding(cfg.pooled_dim + NUM_TIME_IDS * cfg.addition_time_embed_dim,
                                               cfg.time_embed_dim, **kw.dtypes)

        skip_channels = [ch[0]]  # channels of every skip, in down-path order
        self.down_blocks = nnx.List()
        for i in range(levels):
            last = i == levels - 1
            self.down_blocks.append(DownBlock(kw, i, ch[max(i - 1, 0)], ch[i],
                                              attention=cfg.down_block_types[i] != "DownBlock2D", downsample=not last))
            skip_channels += [ch[i]] * (cfg.layers_per_block + (0 if last else 1))
        self.mid_block = MidBlock(kw, ch[-1])
        self.up_blocks = nnx.List()
        prev = ch[-1]
        for i in range(levels):
            level = levels - 1 - i
            n = cfg.layers_per_block + 1
            skips, skip_channels = skip_channels[-n:], skip_channels[:-n]
            self.up_blocks.append(UpBlock(kw, level, prev, ch[level], skips[::-1],
                                          attention=cfg.up_block_types[i] != "UpBlock2D", upsample=i < levels - 1))
            prev = ch[level]
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps,
                                       param_dtype=kw.dtypes["param_dtype"])
        self.conv_out = Conv2d(ch[0], cfg.out_channels, 3, padding=1, **kw.dtypes)

    def check_inputs(self, sample_shape, context_shape, pooled_shape, time_ids_shape) -> None:
        """Shape checks with one-line errors naming the argument (call before jit/compile)."""
        cfg, f = self.config, self.config.downsample_factor
        n = sample_shape[0]
        if len(sample_shape) != 4 or sample_shape[-1] != cfg.in_channels:
            raise ValueError(f"sample must be [N, h, w, {cfg.in_channels}] (NHWC latents), got {tuple(sample_shape)}")
        if sample_shape[1] % f or sample_shape[2] % f:
            raise ValueError(f"sample height/width {tuple(sample_shape[1:3])} must be multiples of {f} "
                             f"(images: multiples of {8 * f})")
        expect = {"context": (context_shape, (n, None, cfg.cross_attention_dim)),
                  "pooled": (pooled_shape, (n, cfg.pooled_dim)),
                  "time_ids": (time_ids_shape, (n, NUM_TIME_IDS))}
        for name, (got, want) in expect.items():
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
                shown = ", ".join("T" if w is None else str(w) for w in want)
                raise ValueError(f"{name} must be [{shown}] to match sample batch {n}, got {tuple(got)}")

    def _block_runner(self):
        """`run(block, *args)` = `block(*args)`, rematerialised per block when `config.remat` says so."""
        def run(block, *args):
            return block(*args)

        remat = self.config.remat
        return run if remat == "none" else nnx.remat(run, policy=remat_policy(remat))

    def __call__(self, sample: jax.Array, timesteps: jax.Array, context: jax.Array, pooled: jax.Array,
                 time_ids: jax.Array) -> jax.Array:
        """sample `[N, h, w, in_channels]`, timesteps `[]` or `[N]` (float), context `[N, T, 2048]`,
        pooled `[N, 1280]`, time_ids `[N, 6]` -> predicted noise `[N, h, w, out_channels]`."""
        cfg = self.config
        self.check_inputs(sample.shape, context.shape, pooled.shape, time_ids.shape)
        dtype = jnp.dtype(cfg.dtype)
        n = sample.shape[0]
        t = jnp.broadcast_to(jnp.asarray(timesteps, jnp.float32), (n,))
        temb = self.time_embedding(timestep_features(t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                                                     freq_shift=cfg.freq_shift).astype(dtype))
        time_feats = timestep_features(time_ids.reshape(-1), cfg.addition_time_embed_dim,
                                       flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift)
        added = jnp.concatenate([pooled.astype(jnp.float32), time_feats.reshape(n, -1)], axis=-1)
        temb = temb + self.add_embedding(added.astype(dtype))
        context = context.astype(dtype)

        x = shard_activation(self.conv_in(sample.astype(dtype)), ("batch", None, None, "act_embed"))
        run = self._block_runner()
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = run(block, x, temb, context)
            skips += block_skips
        x = run(self.mid_block, x, temb, context)
        for block in self.up_blocks:
            n_skips = len(block.resnets)
            block_skips, skips = skips[-n_skips:], skips[:-n_skips]
            x = run(block, x, block_skips, temb, context)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))
