"""Mapping table: Hugging Face / peft Llama state-dict keys -> LlamaForCausalLM parameters.

Accepts plain HF keys (`model.layers.0.self_attn.q_proj.weight`), peft-wrapped keys (prefix
`base_model.model.`, `.base_layer.` in newer peft, `lora_A/lora_B.default`,
`modules_to_save.default` for saved norms - SEEDX.md §6.4) and agent checkpoints (prefix `llm.`).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.llama.model import LlamaForCausalLM
from seedx_jax.weights import LoadReport, Rule, load_weights, transpose

_LAYER = r"model\.layers\.(\d+)\."
_PROJ = r"(self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)"
_SAVED = r"(?:\.modules_to_save\.default)?"

LLAMA_HF_RULES: tuple[Rule, ...] = (
    Rule(r"model\.embed_tokens" + _SAVED + r"\.weight", "embed_tokens.embedding"),
    Rule(_LAYER + _PROJ + r"(?:\.base_layer)?\.weight", r"layers.\1.\2.kernel", transpose),
    Rule(_LAYER + _PROJ + r"\.lora_A\.default\.weight", r"layers.\1.\2.lora_a", transpose),
    Rule(_LAYER + _PROJ + r"\.lora_B\.default\.weight", r"layers.\1.\2.lora_b", transpose),
    Rule(_LAYER + r"(input_layernorm|post_attention_layernorm)" + _SAVED + r"\.weight",
         r"layers.\1.\2.scale"),
    Rule(r"model\.norm" + _SAVED + r"\.weight", "norm.scale"),
    Rule(r"lm_head" + _SAVED + r"\.weight", "lm_head.kernel", transpose),
    # Buffers and peft's unused copies of saved modules.
    Rule(r".*rotary_emb\.inv_freq", None),
    Rule(r".*\.original_module\..*", None),
)

HF_PREFIXES = ("llm.", "base_model.model.")


def load_hf_llama(model: LlamaForCausalLM, tensors: Iterable[tuple[str, np.ndarray]], *,
                  strict: bool = False) -> LoadReport:
    """Load HF/peft Llama tensors; LoRA parameters absent from the source keep their init."""
    has_lora = model.config.lora is not None
    return load_weights(model, tensors, LLAMA_HF_RULES, strip_prefixes=HF_PREFIXES, strict=strict,
                        allow_missing=lambda name, _: has_lora and name.endswith((".lora_a", ".lora_b")))
