"""Mapping table: an official agent checkpoint (`agent/pytorch_model.bin`, docs/checkpoints.md) over
the HF `llm/` folder <-> SeedXAgent. Agent keys: `llm.*` (HF or peft names, the zero-to-fp32 form of a
user's SFT run), `input_resampler.*`, `output_resampler.*`, `patch_pos_embed`. The official loader is
non-strict; ours reports every key it does not use.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.agent.model import SeedXAgent
from seedx_jax.llama.params import LLAMA_RULES, PEFT_PREFIX, is_lora
from seedx_jax.sources import Overlay, Renamed, as_source
from seedx_jax.vision.params import resampler_rules
from seedx_jax.weights import LoadReport, Rule, load_weights, prefixed

RESAMPLERS = ("input_resampler", "output_resampler")
AGENT_RULES: tuple[Rule, ...] = (
    *prefixed(LLAMA_RULES, "llm." + PEFT_PREFIX, "llm."),
    *(rule for name in RESAMPLERS for rule in resampler_rules(name + ".", name + ".")),
    Rule("patch_pos_embed", "patch_pos_embed"),
)


def agent_source(checkpoint, llm=None):
    """The agent checkpoint over the `llm/` folder's tensors (keys prefixed `llm.`): checkpoint keys win."""
    checkpoint = as_source(checkpoint)
    return checkpoint if llm is None else Overlay(Renamed(as_source(llm), add="llm."), checkpoint)


def load_agent(model: SeedXAgent, tensors: Iterable[tuple[str, np.ndarray]], *,
               llm: Iterable[tuple[str, np.ndarray]] | None = None, strict: bool = True) -> LoadReport:
    """Load the agent checkpoint `tensors` on top of an HF `llm` folder's tensors (the released
    `seed_x*/llm`); `llm.*` keys in the checkpoint override those, as the official non-strict load.
    `strict`: fail on keys that no rule maps. LoRA absent from the source keeps its init."""
    has_lora = model.config.llm.lora is not None
    return load_weights(model, agent_source(tensors, llm), AGENT_RULES, strict=strict,
                        allow_missing=lambda name: has_lora and is_lora(name))
