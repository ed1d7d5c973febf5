"""Llama-2 configuration, presets, and validation that names the offending field."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from seedx_jax.config_base import ConfigBase
from seedx_jax.lora import LoraConfig

_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class LlamaConfig(ConfigBase):
    """Field names follow the Hugging Face `config.json` so converted configs read the same."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: = num_attention_heads (MHA)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    param_dtype: str = "float32"  # master weights
    dtype: str = "float32"  # compute; "bfloat16" on accelerators
    scan_layers: bool = True
    remat: str = "none"  # none | full | dots | dots_no_batch
    attention_impl: str = "xla"  # xla | cudnn | anything registered with register_attention_impl
    lora: LoraConfig | None = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"LlamaConfig.{name}={getattr(self, name)} must be positive")
        self.check_divisible("hidden_size", "num_attention_heads")
        self.check_divisible("num_attention_heads", "num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim={self.head_dim} (hidden_size / "
                             "num_attention_heads) must be even for RoPE")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"LlamaConfig.{name}={getattr(self, name)!r} is not one of {_DTYPES}")
        self.check_compute_options()
        if self.lora and self.lora.embedding_rows and self.lora.embedding_rows[1] > self.vocab_size:
            raise ValueError(f"LoraConfig.embedding_rows={self.lora.embedding_rows} exceeds "
                             f"vocab_size={self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def to_hf_dict(self) -> dict[str, Any]:
        """The matching transformers `LlamaConfig` kwargs (architecture fields only)."""
        return dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta, max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=False, hidden_act="silu", attention_bias=False, mlp_bias=False,
        )

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any], **overrides) -> "LlamaConfig":
        """From a Hugging Face Llama `config.json` dict (transformers 4.30 configs lack rope_theta)."""
        if hf.get("tie_word_embeddings"):
            raise ValueError("tie_word_embeddings=True is not supported (Llama-2 has a separate lm_head)")
        rope = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
        return cls(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                   intermediate_size=hf["intermediate_size"],
                   num_hidden_layers=hf["num_hidden_layers"],
                   num_attention_heads=hf["num_attention_heads"],
                   num_key_value_heads=hf.get("num_key_value_heads"),
                   rms_norm_eps=hf.get("rms_norm_eps", 1e-5), rope_theta=float(rope),
                   max_position_embeddings=hf.get("max_position_embeddings", 4096), **overrides)


PRESETS = LlamaConfig.PRESETS = {
    "llama2_7b": LlamaConfig(),
    # SEED-X's LLM: Llama-2-13B-chat with the vocabulary grown by 330 tokens (docs/llm.md).
    "llama2_13b": LlamaConfig(vocab_size=32330, hidden_size=5120, intermediate_size=13824,
                              num_hidden_layers=40, num_attention_heads=40),
    "llama_tiny": LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160,
                              num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256),
    "llama_tiny_gqa": LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  max_position_embeddings=256),
}
