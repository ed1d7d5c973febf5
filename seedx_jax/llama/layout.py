"""The inference layout of a loaded LLM: its scanned (stacked) layers as a list of per-layer modules.

Training scans the stacked layers (one compiled layer body, remat per layer). Serving does better with the
layers unrolled: XLA:CPU copies each layer's slice out of a stacked `[L, ...]` weight before its matmul, so a
scanned prefill or decode step reads every weight about twice, and an unrolled model keeps one KV-cache buffer
per layer that is updated in place (`KVCache`). Measured at the benchmark's small size (bench/bench_seedx.py):
time to first token 20.6 -> 17.3 ms (image-to-text) and 11.2 -> 10.2 ms (text-to-image).
"""
from __future__ import annotations

import jax
from flax import nnx

from seedx_jax.llama.model import LlamaForCausalLM


def unstack_layers(llm: LlamaForCausalLM) -> LlamaForCausalLM:
    """`llm` with `scan_layers=False`: layer i's parameters are row i of the stacked ones (new arrays, on the
    same devices and shardings minus the layer axis); the other parameters are shared, not copied. A model
    that is not scanned is returned as it is. Same outputs, to float32 rounding (tests/test_llama_layout.py).
    """
    cfg = llm.config
    if not cfg.scan_layers:
        return llm
    # The new tree's own variables (their metadata: logical axes without `layers`), given the old values.
    graphdef, state = nnx.split(nnx.eval_shape(lambda: LlamaForCausalLM(cfg.replace(scan_layers=False),
                                                                        rngs=nnx.Rngs(0))))
    values = nnx.to_pure_dict(nnx.state(llm))
    stacked = values.pop("layers")
    values["layers"] = {i: jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(cfg.num_hidden_layers)}
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def unstack_agent_layers(agent):
    """In place: a SEED-X agent's LLM in the serving layout (`unstack_layers`), its config to match. -> agent."""
    agent.llm = unstack_layers(agent.llm)
    agent.config = agent.config.replace(llm=agent.llm.config)
    return agent
