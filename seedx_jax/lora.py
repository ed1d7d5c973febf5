"""LoRA as SEED-X uses it (peft 0.4.0 semantics, docs/llm.md): config, trainable filter, merge/unmerge.

Trainable in SEED-X instruction tuning: LoRA A/B on q,k,v,o,gate,up,down; every module whose name
ends with an entry of `modules_to_save` (peft's plain `endswith`, so "norm" hits every RMSNorm);
the full `embed_tokens` and `lm_head` matrices.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.nn.linear import Linear, LoraSpec

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDING_MODULES = ("embed_tokens", "lm_head")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Defaults are SEED-X's SFT settings (r 32, alpha 32, dropout 0.05, all norms saved)."""

    rank: int = 32
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LORA_TARGETS
    modules_to_save: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm", "norm")
    train_embeddings: bool = True
    # Train only these rows [start, stop) of embed_tokens / lm_head (e.g. (32000, 32330): the 330
    # added SEED-X tokens). None: whole matrices, as SEED-X. Applied by `mask_frozen_rows`.
    embedding_rows: tuple[int, int] | None = None

    def __post_init__(self):
        if self.rank <= 0:
            raise ValueError(f"LoraConfig.rank={self.rank} must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraConfig.dropout={self.dropout} must be in [0, 1)")
        unknown = sorted(set(self.target_modules) - set(LORA_TARGETS))
        if unknown:
            raise ValueError(f"LoraConfig.target_modules has unknown names {unknown}; "
                             f"choose from {LORA_TARGETS}")
        if self.embedding_rows is not None:
            start, stop = self.embedding_rows
            if not 0 <= start < stop:
                raise ValueError(f"LoraConfig.embedding_rows={self.embedding_rows} must be [start, stop) "
                                 "with 0 <= start < stop")

    def spec_for(self, module_name: str) -> LoraSpec | None:
        """peft matches target modules by suffix of the module name."""
        if any(module_name.endswith(t) for t in self.target_modules):
            return LoraSpec(self.rank, self.alpha, self.dropout)
        return None


def _module_names(path) -> list[str]:
    """Module names along a state path (nnx filter paths hold raw keys, tree paths DictKey/...)."""
    keys = [getattr(k, "key", getattr(k, "idx", k)) for k in path[:-1]]
    return [str(k) for k in keys if not isinstance(k, int)]


def trainable_filter(cfg: LoraConfig) -> Callable[[tuple, Any], bool]:
    """nnx filter selecting exactly the trainable parameters (for `nnx.Optimizer(wrt=...)`)."""

    def is_trainable(path, var) -> bool:
        if isinstance(var, nnx.LoRAParam):
            return True
        if not isinstance(var, nnx.Param):
            return False
        names = _module_names(path)
        if cfg.train_embeddings and names and names[0] in EMBEDDING_MODULES:
            return True
        return any(n.endswith(m) for n in names for m in cfg.modules_to_save)

    return is_trainable


def mask_frozen_rows(grads: nnx.State, cfg: LoraConfig) -> nnx.State:
    """Zero the gradient rows of embed_tokens / lm_head outside `cfg.embedding_rows`."""
    if cfg.embedding_rows is None:
        return grads
    start, stop = cfg.embedding_rows

    def mask(path, g):
        names = _module_names(path)
        if not names or names[0] not in EMBEDDING_MODULES:
            return g
        row_axis = 0 if names[0] == "embed_tokens" else 1  # lm_head kernel is [embed, vocab]
        rows = jnp.arange(g.shape[row_axis])
        keep = (rows >= start) & (rows < stop)
        return g * jnp.expand_dims(keep, 1 - row_axis).astype(g.dtype)

    return jax.tree_util.tree_map_with_path(
        lambda p, v: v.replace(mask(p, v[...])) if isinstance(v, nnx.Variable) else mask(p, v),
        grads, is_leaf=lambda x: isinstance(x, nnx.Variable))


@functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=(1,))
def _fold(graphdef, state, sign: float):
    model = nnx.merge(graphdef, state)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, Linear) and module.lora is not None:
            module.kernel[...] = module.kernel[...] + sign * module.lora_delta().astype(module.kernel.dtype)
    return nnx.state(model)


def _set_merged(model: nnx.Module, sign: float) -> None:
    lora_linears = [m for _, m in nnx.iter_modules(model) if isinstance(m, Linear) and m.lora is not None]
    if not lora_linears:
        raise ValueError("the model has no LoRA layers to merge")
    want = sign < 0  # unmerge needs merged layers, merge needs unmerged ones
    if any(m.lora_merged != want for m in lora_linears):
        raise ValueError(f"LoRA is already {'unmerged' if want else 'merged'}")
    graphdef, state = nnx.split(model)
    nnx.update(model, _fold(graphdef, state, sign))
    for m in lora_linears:
        m.lora_merged = not want


def merge_lora(model: nnx.Module) -> None:
    """In place, jitted: kernel += scaling * A @ B for every LoRA Linear; the LoRA branch goes off."""
    _set_merged(model, 1.0)


def unmerge_lora(model: nnx.Module) -> None:
    """Inverse of `merge_lora` (kernel -= scaling * A @ B); the LoRA branch comes back on."""
    _set_merged(model, -1.0)
