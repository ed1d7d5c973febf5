"""`ResamplerXLV2` (SEED-X resampler.py): ViT-space features -> SDXL prompt embeddings and pooled embedding.

64 learned latents pass through `depth` perceiver blocks (attention over [image tokens; latents],
then a feed-forward), then norm_out; two projections give the 768 + 1280 = 2048-d
`encoder_hidden_states`, and a CLIP-style attention pool (mean token prepended, keep token 0) the
1280-d `text_embeds`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.nn import LayerNorm, Linear, apply_layers, attention, stack_layers


@dataclasses.dataclass(frozen=True)
class ResamplerXLConfig(ConfigBase):
    dim: int = 1024
    depth: int = 4
    dim_head: int = 64
    heads: int = 16
    num_queries: int = 64
    embedding_dim: int = 4096  # input feature width (the ViT output)
    output1_dim: int = 768  # SDXL CLIP-L slot
    output2_dim: int = 1280  # SDXL OpenCLIP-bigG slot and pooled width
    ff_mult: int = 4
    pool_heads: int = 16
    eps: float = 1e-5
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"

    def __post_init__(self):
        self.check_divisible("dim", "pool_heads")

    @property
    def inner_dim(self) -> int:
        return self.dim_head * self.heads


ResamplerXLConfig.PRESETS = {
    "seedx_detokenizer": ResamplerXLConfig(),
    "tiny": ResamplerXLConfig(dim=32, depth=2, dim_head=8, heads=4, num_queries=4, embedding_dim=16,
                              output1_dim=12, output2_dim=20, pool_heads=4),
}


def _linear(cfg: ResamplerXLConfig, din: int, dout: int, axes, rngs, bias: bool = False) -> Linear:
    return Linear(din, dout, logical_axes=axes, use_bias=bias, dtype=jnp.dtype(cfg.dtype),
                  param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)


def _heads(x: jax.Array, heads: int) -> jax.Array:
    return x.reshape(*x.shape[:2], heads, x.shape[-1] // heads)


class PerceiverAttention(nnx.Module):
    def __init__(self, cfg: ResamplerXLConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pdtype = jnp.dtype(cfg.param_dtype)
        self.norm1 = LayerNorm(cfg.dim, eps=cfg.eps, param_dtype=pdtype)  # image features
        self.norm2 = LayerNorm(cfg.dim, eps=cfg.eps, param_dtype=pdtype)  # latents
        self.to_q = _linear(cfg, cfg.dim, cfg.inner_dim, ("embed", "heads"), rngs)
        self.to_kv = _linear(cfg, cfg.dim, 2 * cfg.inner_dim, ("embed", "heads"), rngs)  # [k | v]
        self.to_out = _linear(cfg, cfg.inner_dim, cfg.dim, ("heads", "embed"), rngs)

    def __call__(self, x: jax.Array, latents: jax.Array) -> jax.Array:
        """x `[N, L, dim]`, latents `[N, Q, dim]` -> `[N, Q, dim]`."""
        n, q_len, _ = latents.shape
        xn, ln = self.norm1(x), self.norm2(latents)
        q = _heads(self.to_q(ln), self.cfg.heads)
        k, v = jnp.split(self.to_kv(jnp.concatenate([xn, ln], axis=1)), 2, axis=-1)
        out = attention(q, _heads(k, self.cfg.heads), _heads(v, self.cfg.heads), impl=self.cfg.attention_impl)
        return self.to_out(out.reshape(n, q_len, self.cfg.inner_dim))


class FeedForward(nnx.Module):
    def __init__(self, cfg: ResamplerXLConfig, *, rngs: nnx.Rngs):
        self.norm = LayerNorm(cfg.dim, eps=cfg.eps, param_dtype=jnp.dtype(cfg.param_dtype))
        self.fc1 = _linear(cfg, cfg.dim, cfg.dim * cfg.ff_mult, ("embed", "mlp"), rngs)
        self.fc2 = _linear(cfg, cfg.dim * cfg.ff_mult, cfg.dim, ("mlp", "embed"), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(self.norm(x)), approximate=False))


class PerceiverBlock(nnx.Module):
    def __init__(self, cfg: ResamplerXLConfig, *, rngs: nnx.Rngs):
        self.attn = PerceiverAttention(cfg, rngs=rngs)
        self.ff = FeedForward(cfg, rngs=rngs)

    def __call__(self, x: jax.Array, latents: jax.Array) -> jax.Array:
        latents = latents + self.attn(x, latents)
        return latents + self.ff(latents)


class AttentionPool(nnx.Module):
    """CLIP `AttentionPool2d` over the latents: [mean; tokens] + positions, attend, keep token 0."""

    def __init__(self, cfg: ResamplerXLConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        pdtype = jnp.dtype(cfg.param_dtype)
        self.positional_embedding = nnx.Param(
            jax.random.normal(rngs.params(), (cfg.num_queries + 1, cfg.dim), pdtype) / cfg.dim ** 0.5,
            logical_axes=(None, "embed"))
        self.q_proj = _linear(cfg, cfg.dim, cfg.dim, ("embed", "heads"), rngs, bias=True)
        self.k_proj = _linear(cfg, cfg.dim, cfg.dim, ("embed", "heads"), rngs, bias=True)
        self.v_proj = _linear(cfg, cfg.dim, cfg.dim, ("embed", "heads"), rngs, bias=True)
        self.c_proj = _linear(cfg, cfg.dim, cfg.output2_dim, ("heads", "embed"), rngs, bias=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x `[N, Q, dim]` -> `[N, output2_dim]`."""
        x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
        x = x + self.positional_embedding[...].astype(x.dtype)
        h = self.cfg.pool_heads
        q = _heads(self.q_proj(x[:, :1]), h)  # only token 0 is kept, so only its query is needed
        out = attention(q, _heads(self.k_proj(x), h), _heads(self.v_proj(x), h), impl=self.cfg.attention_impl)
        return self.c_proj(out.reshape(x.shape[0], 1, self.cfg.dim))[:, 0]


class ResamplerXL(nnx.Module):
    def __init__(self, cfg: ResamplerXLConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        pdtype = jnp.dtype(cfg.param_dtype)
        self.latents = nnx.Param(
            jax.random.normal(rngs.params(), (1, cfg.num_queries, cfg.dim), pdtype) / cfg.dim ** 0.5,
            logical_axes=(None, None, "embed"))
        self.proj_in = _linear(cfg, cfg.embedding_dim, cfg.dim, ("heads", "embed"), rngs, bias=True)
        self.layers = stack_layers(lambda r: PerceiverBlock(cfg, rngs=r), cfg.depth, rngs)
        self.norm_out = LayerNorm(cfg.dim, eps=cfg.eps, param_dtype=pdtype)
        self.unet_proj_1 = _linear(cfg, cfg.dim, cfg.output1_dim, ("embed", "heads"), rngs, bias=True)
        self.unet_proj_2 = _linear(cfg, cfg.dim, cfg.output2_dim, ("embed", "heads"), rngs, bias=True)
        self.unet_attnpool = AttentionPool(cfg, rngs=rngs)

    def __call__(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """features `[N, L, embedding_dim]` (L = 64 pooled or 256 unpooled ViT tokens) ->
        (prompt_embeds `[N, num_queries, output1_dim + output2_dim]`, pooled `[N, output2_dim]`)."""
        cfg = self.config
        if features.ndim != 3 or features.shape[-1] != cfg.embedding_dim:
            raise ValueError(f"features must be [N, L, {cfg.embedding_dim}], got shape {features.shape}")
        x = self.proj_in(features.astype(jnp.dtype(cfg.dtype)))
        latents = jnp.broadcast_to(self.latents[...].astype(x.dtype), (x.shape[0], cfg.num_queries, cfg.dim))

        def step(block, lat, _):
            return block(x, lat), None

        latents, _ = apply_layers(self.layers, step, latents, None, scan=True)
        hidden = self.norm_out(latents)
        prompt_embeds = jnp.concatenate([self.unet_proj_1(hidden), self.unet_proj_2(hidden)], axis=-1)
        return prompt_embeds, self.unet_attnpool(hidden)
