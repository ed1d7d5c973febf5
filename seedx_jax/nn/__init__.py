"""Layers shared by every seedx_jax model (LLM, ViT, resamplers, U-Net)."""
from seedx_jax.nn.attention import attention, register_attention_impl
from seedx_jax.nn.buffer import Buffer
from seedx_jax.nn.conv import Conv2d
from seedx_jax.nn.embedding import Embedding
from seedx_jax.nn.linear import Linear, LoraSpec
from seedx_jax.nn.mha import MultiHeadAttention
from seedx_jax.nn.norms import GroupNorm, LayerNorm, RMSNorm
from seedx_jax.nn.rope import apply_rope, rope_cos_sin
from seedx_jax.nn.stack import apply_layers, remat_policy, stack_layers

__all__ = [
    "Buffer", "Conv2d", "Embedding", "GroupNorm", "LayerNorm", "Linear", "LoraSpec",
    "MultiHeadAttention", "RMSNorm", "apply_layers", "apply_rope", "attention",
    "register_attention_impl", "remat_policy", "rope_cos_sin", "stack_layers",
]
