"""Generation rows at batch 1: image-to-text time to first token and decode tokens/s, text-to-image time to first
token (the prompt ends in `<img>`) and the forced image-token span (`<img_00000>`.. + `</img>`, with the
output resampler on its hidden states).

Ours: an `AgentGenerator` (the pipeline's generation: the agent split once; float weights in the serving
layout of `seedx_jax.llama.layout`, int8 ones scanned, as the pipeline loads them) from ViT features (input resampler + patch positions + prefill + decode with the
image-token forcing). Torch: `ContinuousLVLM.generate`'s statement (tests/seedx_fixtures.py `TorchAgent`,
transformers `generate` with the official forcing processor and hidden states kept).
Decode time per token = (time of the n-token call - time of the 1-token call) / (n - 1), pair by pair.
"""
from __future__ import annotations

import numpy as np

from seedx_jax.agent.generate import AgentGenerator, ImageTokenForcing
from seedx_jax.llama.layout import unstack_agent_layers
from seedx_jax.quantization import quantize_int8, weight_bytes

from sizes import Sizes
from timing import Row, compile_time, first_call, interleave
import torch_side


def _i2t_prompt(s: Sizes, rng: np.random.Generator):
    """BOS, text, one any-res image (a tile + the global view), text -> (ids [1, T], cmp mask, ViT features,
    positions)."""
    n, half = s.num_image_tokens, s.prompt_text // 2
    image = [s.patch_start, *range(s.image_token, s.image_token + n), s.patch_end,
             s.img_start, *range(s.image_token, s.image_token + n), s.img_end]
    ids = np.array([[1, *rng.integers(3, s.base_vocab, half), *image, *rng.integers(3, s.base_vocab, half)]])
    mask = (ids >= s.image_token) & (ids < s.image_token + n)
    feats = rng.normal(size=(2, s.vit.pool_grid ** 2, s.vit.output_dim)).astype(np.float32)
    return ids, mask, feats, rng.uniform(size=(2, 2)).astype(np.float32)


def decode_bytes(llm, context: float) -> float:
    """Bytes one batch-1 decode step of `llm` must read: its weights as stored (float32, or int8 + scales), the
    embedding table counting one row, and float32 K and V caches of `context` positions."""
    cfg = llm.config
    table = llm.embed_tokens.embedding[...]
    weights = weight_bytes(llm) - table.nbytes + table.nbytes // table.shape[0]
    return weights + 4.0 * 2 * cfg.num_hidden_layers * context * cfg.num_key_value_heads * cfg.head_dim


def agent_rows(s: Sizes, pairs: int, only) -> list[Row]:
    ref, ours = torch_side.agent_pair(s.agent)
    ref.eval()
    unstack_agent_layers(ours)  # the pipeline's serving layout (float weights)
    n = s.num_image_tokens
    span = (s.img_start, *range(s.image_token, s.image_token + n), s.img_end)
    forcing = ImageTokenForcing(span)
    rng = np.random.default_rng(0)
    rows = []

    generators = {}

    def ours_fn(ids, mask, feats, pos, count, agent=ours):
        generate = generators.setdefault(id(agent), AgentGenerator(agent))
        return lambda: generate(ids, max_new_tokens=count, forcing=forcing, stop_token_ids=[], ids_cmp_mask=mask,
                                cmp_features=feats, cmp_positions=pos)

    if {"i2t_ttft", "i2t_decode", "int8_decode"} & set(only):
        ids, mask, feats, pos = _i2t_prompt(s, rng)
        m = s.new_tokens
        want = torch_side.torch_generate(ref, ids, mask, feats, pos, m, span, regress=False)[0].numpy()

        def matching(fn):
            got, seconds = first_call(lambda: np.asarray(fn().tokens)[0])
            return f"greedy ids match for {np.cumprod(want[0] == got).sum()} of {m} tokens", seconds

        check, first = matching(ours_fn(ids, mask, feats, pos, m))
        jax_calls = {str(c): ours_fn(ids, mask, feats, pos, c) for c in (1, m)}
        if "int8_decode" in only:  # the same weights, the LLM's dense layers int8 (qwix arrays)
            _, int8_agent = torch_side.agent_pair(s.agent)
            quantize_int8(int8_agent)
            int8_check, int8_first = matching(ours_fn(ids, mask, feats, pos, m, int8_agent))
            jax_calls.update({f"int8:{c}": ours_fn(ids, mask, feats, pos, c, int8_agent) for c in (1, m)})
        tm = interleave({str(c): (lambda c=c: torch_side.torch_generate(ref, ids, mask, feats, pos, c, span,
                                                                        regress=False)) for c in (1, m)},
                        jax_calls, pairs)
        prompt = ids.shape[1]

        def per_token(side: str, label: str = "") -> list[float]:
            return [(long - one) / (m - 1) for one, long in zip(tm.calls[f"{side}:{label}1"],
                                                                tm.calls[f"{side}:{label}{m}"])]

        if "i2t_ttft" in only:
            rows.append(Row("i2t_ttft", f"image-to-text time to first token (prompt {prompt})", tm.calls["torch:1"],
                            tm.calls["jax:1"], tm.first["jax:1"] - min(tm.calls["jax:1"]), check))
        note = "ceiling: (weights + KV bytes per token / bandwidth) / time per token"
        if "i2t_decode" in only:
            rows.append(Row("i2t_decode", f"image-to-text decode, s/token ({m} tokens, batch 1)", per_token("torch"),
                            per_token("jax"), compile_time(first, tm, str(m)), check,
                            bytes=decode_bytes(ours.llm, prompt + m / 2), note=note))
        if "int8_decode" in only:
            rows.append(Row("int8_decode", "decode s/token, int8 weights vs official fp32 (batch 1)",
                            per_token("torch"), per_token("jax", "int8:"), compile_time(int8_first, tm, f"int8:{m}"),
                            int8_check, bytes=decode_bytes(int8_agent.llm, prompt + m / 2), note=note))
    if {"t2i_ttft", "t2i_forced"} & set(only):
        ids = np.array([[1, *rng.integers(3, s.base_vocab, s.prompt_text), s.img_start]])
        k = n + 1
        want, want_feats = torch_side.torch_generate(ref, ids, None, None, None, k, span, regress=True)
        got, first = first_call(ours_fn(ids, None, None, None, k))
        diff = float(np.abs(got.image_features[0] - want_feats.numpy()).max())
        same = (want.numpy() == got.tokens).all()
        check = f"forced ids {'match' if same else 'DIFFER'}, features max abs diff {diff:.1e}"
        tm = interleave({"1": lambda: torch_side.torch_generate(ref, ids, None, None, None, 1, span, regress=False),
                         "k": lambda: torch_side.torch_generate(ref, ids, None, None, None, k, span, regress=True)},
                        {"1": ours_fn(ids, None, None, None, 1), "k": ours_fn(ids, None, None, None, k)}, pairs)
        if "t2i_ttft" in only:
            rows.append(Row("t2i_ttft", f"text-to-image time to first token (prompt {ids.shape[1]}, ends in <img>)",
                            tm.calls["torch:1"], tm.calls["jax:1"], tm.first["jax:1"] - min(tm.calls["jax:1"]), check))
        if "t2i_forced" in only:
            rows.append(Row("t2i_forced", f"text-to-image call, forced {k} tokens + output resampler",
                            tm.calls["torch:k"], tm.calls["jax:k"], compile_time(first, tm, "k"), check))
    return rows
