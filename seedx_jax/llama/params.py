"""Mapping table: Hugging Face / peft Llama state-dict keys <-> LlamaForCausalLM variables.

Accepts plain HF keys (`model.layers.0.self_attn.q_proj.weight`), peft-wrapped keys (prefix
`base_model.model.`, `.base_layer.` in newer peft, `lora_A/lora_B.default`,
`modules_to_save.default` for saved norms - docs/llm.md#lora) and agent checkpoints (prefix `llm.`).
Export writes the plain HF names (and `lora_A/B.weight` for LoRA variables).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.llama.model import LlamaForCausalLM
from seedx_jax.weights import TRANSPOSE, LoadReport, Rule, load_weights, prefixed

_LAYER = "model.layers.{i}."
_PROJ = r"{proj:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj}"
_SAVED = "[.modules_to_save.default]"

LLAMA_RULES: tuple[Rule, ...] = (
    Rule("model.embed_tokens" + _SAVED + ".weight", "embed_tokens.embedding"),
    Rule(_LAYER + _PROJ + "[.base_layer].weight", "layers.{i}.{proj}.kernel", TRANSPOSE),
    Rule(_LAYER + _PROJ + ".lora_A[.default].weight", "layers.{i}.{proj}.lora_a", TRANSPOSE),
    Rule(_LAYER + _PROJ + ".lora_B[.default].weight", "layers.{i}.{proj}.lora_b", TRANSPOSE),
    Rule(_LAYER + "{norm:input_layernorm|post_attention_layernorm}" + _SAVED + ".weight",
         "layers.{i}.{norm}.scale"),
    Rule("model.norm" + _SAVED + ".weight", "norm.scale"),
    Rule("lm_head" + _SAVED + ".weight", "lm_head.kernel", TRANSPOSE),
    # Buffers and peft's unused copies of saved modules.
    Rule("{path:.*}rotary_emb.inv_freq", None),
    Rule("{path:.*}.original_module.{rest:.*}", None),
)
PEFT_PREFIX = "[base_model.model.]"
LLAMA_HF_RULES = prefixed(LLAMA_RULES, "[llm.]" + PEFT_PREFIX, "")


def is_lora(name: str) -> bool:
    return name.endswith((".lora_a", ".lora_b"))


def load_hf_llama(model: LlamaForCausalLM, tensors: Iterable[tuple[str, np.ndarray]], *,
                  strict: bool = False) -> LoadReport:
    """Load HF/peft Llama tensors (a mapping, `(key, array)` pairs or a TensorSource); LoRA parameters
    absent from the source keep their init.

    Raises:
      ValueError: `model` is not a `LlamaForCausalLM`, `tensors` of another form, or the load report's
        problems (`load_weights`).
    """
    if not isinstance(model, LlamaForCausalLM):
        raise ValueError(f"model must be a LlamaForCausalLM, got {type(model).__name__}")
    has_lora = model.config.lora is not None
    return load_weights(model, tensors, LLAMA_HF_RULES, strict=strict,
                        allow_missing=lambda name: has_lora and is_lora(name))
