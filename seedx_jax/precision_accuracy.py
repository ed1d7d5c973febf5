"""How far bf16 compute and int8 LLM weights move a Llama from its fp32 self (docs/precision.md).

The fp32 model decodes greedily; each variant then reads the same tokens (teacher forcing) so that
its logits are compared position by position, and decodes on its own to see where it first leaves
the fp32 text.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.llama.config import LlamaConfig
from seedx_jax.llama.generate import generate
from seedx_jax.llama.model import LlamaForCausalLM
from seedx_jax.precision import Precision

VARIANTS = {"bf16": Precision(compute_dtype="bfloat16"), "int8": Precision(llm_weights="int8"),
            "int8+bf16": Precision(compute_dtype="bfloat16", llm_weights="int8")}


@dataclasses.dataclass(frozen=True)
class AccuracyRow:
    variant: str
    max_logit_error: float  # max |logits - fp32 logits| over the generated positions
    mean_logit_error: float
    logit_scale: float  # mean |fp32 logits|, to read the errors against
    agreement: float  # fraction of positions whose argmax is the fp32 greedy token (teacher-forced)
    first_divergence: float  # mean over rows of the free-running tokens equal to fp32's before the first miss

    def line(self) -> str:
        return (f"| {self.variant} | {self.max_logit_error:.4f} | {self.mean_logit_error:.5f} | "
                f"{self.logit_scale:.3f} | {self.agreement:.3f} | {self.first_divergence:.1f} |")


TABLE_HEADER = ("| variant | max logit error | mean logit error | mean abs logit | greedy agreement "
                "(teacher-forced) | free-run tokens before first miss |\n|---|---|---|---|---|---|")


def accuracy_table(cfg: LlamaConfig, *, batch: int = 4, prompt_len: int = 8, new_tokens: int = 64,
                   seed: int = 0, variants=tuple(VARIANTS)) -> list[AccuracyRow]:
    """Rows for `variants` (keys of `VARIANTS`) of a randomly initialised fp32 Llama `cfg`.

    Raises:
      ValueError: prompt_len + new_tokens exceeds cfg.max_position_embeddings, or an unknown variant.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"accuracy_table: unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    cfg = cfg.replace(dtype="float32", param_dtype="float32", lora=None)
    ref = LlamaForCausalLM(cfg, rngs=nnx.Rngs(seed))
    prompt = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, prompt_len), dtype=np.int32)
    ref_tokens = np.asarray(generate(ref, prompt, new_tokens).tokens)
    sequence = jnp.asarray(np.concatenate([prompt, ref_tokens], axis=1))
    # logits at positions prompt_len - 1 .. end - 2 predict the new tokens
    window = slice(prompt_len - 1, prompt_len + new_tokens - 1)
    ref_logits = _logits(ref, sequence)[:, window]
    rows = []
    for name in variants:
        model = VARIANTS[name].apply(ref)
        logits = _logits(model, sequence)[:, window]
        error = jnp.abs(logits - ref_logits)
        agree = jnp.mean(jnp.argmax(logits, -1) == ref_tokens)
        free = np.asarray(generate(model, prompt, new_tokens).tokens)
        misses = free != ref_tokens
        first_miss = np.where(misses.any(1), misses.argmax(1), new_tokens)
        rows.append(AccuracyRow(name, float(error.max()), float(error.mean()), float(jnp.abs(ref_logits).mean()),
                                float(agree), float(first_miss.mean())))
    return rows


@nnx.jit
def _logits(model: LlamaForCausalLM, ids: jax.Array) -> jax.Array:
    return model(ids).logits.astype(jnp.float32)
