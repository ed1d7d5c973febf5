"""Qwen-VL ViT-G/14 with attention pool (`VisionTransformerWithAttnPool`, qwen_visual.py).

images `[N, S, S, 3]` (NHWC, CLIP-normalised) -> patch embedding -> + position table (16x16 stored,
bicubic-resized to the patch grid) -> ln_pre -> pre-LN blocks -> attention pool (Resampler) ->
ln_post -> `@ proj` -> `[N, 256, 4096]`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.nn import LayerNorm, Linear, MultiHeadAttention, apply_layers, stack_layers
from seedx_jax.sharding import shard_activation
from seedx_jax.vision.position_tables import resize_table
from seedx_jax.vision.resampler import Resampler, ResamplerConfig


@dataclasses.dataclass(frozen=True)
class VisionConfig(ConfigBase):
    image_size: int = 448
    patch_size: int = 14
    width: int = 1664
    layers: int = 48
    heads: int = 16
    mlp_dim: int = 8192  # int(1664 * 4.9231)
    output_dim: int = 4096
    pool_grid: int = 16  # 256 attention-pool queries
    pool_heads: int = 32  # output_dim // 128
    pos_table_grid: int = 16  # the stored positional_embedding is always 16x16
    eps: float = 1e-6
    param_dtype: str = "float32"
    dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    attention_impl: str = "xla"

    def __post_init__(self):
        for field, by in (("width", "heads"), ("output_dim", "pool_heads"), ("image_size", "patch_size")):
            self.check_divisible(field, by)
        self.check_compute_options()

    @property
    def pool(self) -> ResamplerConfig:
        return ResamplerConfig(grid_size=self.pool_grid, embed_dim=self.output_dim,
                               num_heads=self.pool_heads, kv_dim=self.width, eps=self.eps,
                               dtype=self.dtype, param_dtype=self.param_dtype,
                               attention_impl=self.attention_impl)


VISION_PRESETS = VisionConfig.PRESETS = {
    "qwen_vit_g_448": VisionConfig(),
    # Same structure, tiny width; keeps the 16x16 position table and the 256-query pool.
    "qwen_vit_tiny": VisionConfig(image_size=224, width=64, layers=2, heads=4, mlp_dim=128,
                                  output_dim=128, pool_heads=2),
}


class VisionBlock(nnx.Module):
    """Pre-LN residual block: x + attn(ln_1(x)); x + c_proj(gelu(c_fc(ln_2(x))))."""

    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs):
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.ln_1 = LayerNorm(cfg.width, eps=cfg.eps, param_dtype=pdtype)
        self.attn = MultiHeadAttention(cfg.width, cfg.heads, dtype=dtype, param_dtype=pdtype,
                                       attention_impl=cfg.attention_impl, rngs=rngs)
        self.ln_2 = LayerNorm(cfg.width, eps=cfg.eps, param_dtype=pdtype)
        self.c_fc = Linear(cfg.width, cfg.mlp_dim, logical_axes=("embed", "mlp"), use_bias=True,
                           dtype=dtype, param_dtype=pdtype, rngs=rngs)
        self.c_proj = Linear(cfg.mlp_dim, cfg.width, logical_axes=("mlp", "embed"), use_bias=True,
                             dtype=dtype, param_dtype=pdtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h)
        x = x + self.c_proj(jax.nn.gelu(self.c_fc(self.ln_2(x)), approximate=False))
        return shard_activation(x, ("batch", "seq", "act_embed"))


class QwenViT(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        p, w = cfg.patch_size, cfg.width
        # conv1 as a kernel [kh, kw, in, out] (no bias), applied as a matmul over flattened patches
        self.conv1 = nnx.Param(0.02 * jax.random.normal(rngs.params(), (p, p, 3, w), pdtype),
                               logical_axes=(None, None, None, "embed"))
        self.positional_embedding = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (cfg.pos_table_grid ** 2, w), pdtype),
            logical_axes=(None, "embed"))
        self.ln_pre = LayerNorm(w, eps=cfg.eps, param_dtype=pdtype)
        if cfg.scan_layers:
            self.resblocks = stack_layers(lambda r: VisionBlock(cfg, rngs=r), cfg.layers, rngs)
        else:
            self.resblocks = nnx.List([VisionBlock(cfg, rngs=rngs) for _ in range(cfg.layers)])
        self.attn_pool = Resampler(cfg.pool, rngs=rngs)
        self.ln_post = LayerNorm(cfg.output_dim, eps=cfg.eps, param_dtype=pdtype)
        self.proj = nnx.Param(
            cfg.output_dim ** -0.5 * jax.random.normal(rngs.params(), (cfg.output_dim,) * 2, pdtype),
            logical_axes=("embed", "heads"))
        self.dtype = dtype

    def __call__(self, images: jax.Array) -> jax.Array:
        """images `[N, S, S, 3]` (S a multiple of patch_size) -> `[N, pool_grid**2, output_dim]`."""
        cfg = self.config
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be [N, S, S, 3] (NHWC, square), got shape {images.shape}")
        n, s, _, _ = images.shape
        p = cfg.patch_size
        if s % p:
            raise ValueError(f"image side {s} is not a multiple of patch_size={p}")
        g = s // p
        patches = images.astype(self.dtype).reshape(n, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5)
        x = patches.reshape(n * g * g, p * p * 3) @ self.conv1[...].astype(self.dtype).reshape(p * p * 3, -1)
        x = x.reshape(n, g * g, cfg.width)
        t = cfg.pos_table_grid
        x = x + resize_table(self.positional_embedding[...], (t, t), (g, g)).astype(self.dtype)
        x = shard_activation(self.ln_pre(x), ("batch", "seq", "act_embed"))

        def step(block, h, _):
            return block(h), None

        x, _ = apply_layers(self.resblocks, step, x, None, scan=cfg.scan_layers, remat=cfg.remat)
        x = self.ln_post(self.attn_pool(x))
        return x @ self.proj[...].astype(self.dtype)
