"""Mapping table: an official agent checkpoint (`agent/pytorch_model.bin`, SEEDX.md §5.6, §10) ->
SeedXAgent. Keys: `llm.*` (HF or peft names), `input_resampler.*`, `output_resampler.*`,
`patch_pos_embed`. The official loader is non-strict; ours reports every unused key instead.
"""
from __future__ import annotations

from typing import Iterable

import jax.numpy as jnp
import numpy as np

from seedx_jax.agent.model import SeedXAgent
from seedx_jax.llama.params import load_hf_llama
from seedx_jax.vision.params import load_resampler

_RESAMPLERS = ("input_resampler", "output_resampler")


def load_agent(model: SeedXAgent, tensors: Iterable[tuple[str, np.ndarray]], *,
               llm: Iterable[tuple[str, np.ndarray]] = (), strict: bool = True) -> dict[str, int]:
    """Load the agent checkpoint `tensors` on top of an HF `llm` folder's tensors (the released
    `seed_x*/llm`); `llm.*` keys in the checkpoint override those, as the official non-strict load.

    Returns tensor counts per part. `strict`: fail on keys that belong to no part.
    """
    groups: dict[str, list] = {"llm": [], **{name: [] for name in _RESAMPLERS}}
    unknown, patch_pos = [], None
    for key, value in tensors:
        part = key.split(".", 1)[0]
        if key == "patch_pos_embed":
            patch_pos = np.asarray(value)
        elif part in groups:
            groups[part].append((key, value))
        else:
            unknown.append(key)
    if strict and unknown:
        raise ValueError(f"agent checkpoint has {len(unknown)} keys outside llm/resamplers/patch_pos_embed, "
                         f"e.g. {unknown[:3]}")
    overrides = {k[len("llm."):]: v for k, v in groups["llm"]}
    llm_tensors = [(k, v) for k, v in llm if k not in overrides] + list(overrides.items())
    if llm_tensors:
        load_hf_llama(model.llm, llm_tensors, strict=strict)
    for name in _RESAMPLERS:
        load_resampler(getattr(model, name), groups[name], prefix=f"{name}.", strict=strict)
    if patch_pos is None:
        raise ValueError("agent checkpoint lacks patch_pos_embed")
    want = model.patch_pos_embed.shape
    if patch_pos.shape != want:
        raise ValueError(f"patch_pos_embed has shape {patch_pos.shape}, the model needs {want}")
    model.patch_pos_embed[...] = jnp.asarray(patch_pos, model.patch_pos_embed.dtype)
    return {"llm": len(llm_tensors), **{n: len(groups[n]) for n in _RESAMPLERS}, "patch_pos_embed": 1}
