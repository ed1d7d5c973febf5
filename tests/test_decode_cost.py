"""What a compiled decode step reads and writes, from XLA's optimized HLO and cost analysis (AOT on abstract
inputs: no weights are materialised)."""
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from seedx_jax.llama import KVCache, LlamaConfig, LlamaForCausalLM

# issue 20's "small" LLM (bench/sizes.py), unscanned: XLA's cost analysis counts a while loop's body once, so
# only unrolled layers give per-token bytes.
SMALL = LlamaConfig(vocab_size=842, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                    num_attention_heads=8, max_position_embeddings=4096, scan_layers=False)


def compile_decode_step(cfg: LlamaConfig, batch: int, context: int):
    """-> (compiled one-token step with the cache donated, weight bytes, cache bytes, one cache buffer's HLO type)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))))

    def step(state, cache, tokens, positions):
        out = nnx.merge(graphdef, state)(tokens, positions=positions, cache=cache)
        return out.logits, out.cache

    cache = jax.eval_shape(lambda: KVCache.init(cfg, batch, context))
    tokens = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
    compiled = jax.jit(step, donate_argnums=1).lower(state, cache, tokens, tokens).compile()
    nbytes = [sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(t)) for t in (state, cache)]
    buffer = jax.tree.leaves(cache)[0]
    hlo_type = f"{jnp.dtype(buffer.dtype).name.replace('float', 'f')}[{','.join(map(str, buffer.shape))}]"
    return compiled, *nbytes, hlo_type


def cache_sized_buffers(hlo: str, cache_shape: str) -> list[str]:
    """Instructions outside fusion bodies that produce a whole cache buffer (parameters and aliases of them -
    tuple elements, bitcasts - excluded)."""
    found, in_fusion = [], False
    for line in hlo.splitlines():
        if line and not line.startswith(" "):
            in_fusion = line.startswith(("%fused", "%wrapped"))
        elif not in_fusion and f"= {cache_shape}" in line and not re.search(
                r" (parameter|get-tuple-element|bitcast)\(", line):
            found.append(line.strip()[:160])
    return found


def read_ratio(cfg: LlamaConfig, batch: int, context: int = 4096) -> float:
    """XLA's bytes accessed by one decode step / (weights + cache)."""
    compiled, weights, cache, _ = compile_decode_step(cfg, batch, context)
    return compiled.cost_analysis()["bytes accessed"] / (weights + cache)


@pytest.mark.parametrize("scan", [True, False], ids=["scanned", "unscanned"])
def test_decode_step_updates_the_cache_in_place(scan):
    cfg = LlamaConfig.preset("llama_tiny", scan_layers=scan, max_position_embeddings=512)
    batch = 2
    compiled, _, _, shape = compile_decode_step(cfg, batch, 512)
    hlo = compiled.as_text()
    buffers = 2 if scan else 2 * cfg.num_hidden_layers
    # Every donated cache buffer (outputs 1.. after the logits) comes back in its input's memory...
    aliased = re.findall(r"\{(\d+)\}: \(\d+, \{\}, may-alias\)", hlo.split("input_output_alias=", 1)[1].split("\n")[0])
    assert sorted(map(int, aliased)) == list(range(1, buffers + 1))
    # ... and the only whole-buffer results are the writes of the new token: no copy, no re-stacked cache coming
    # out of the layer loop (stacked: one scatter per buffer; per layer: one update per batch row).
    whole = cache_sized_buffers(hlo, shape)
    assert len(whole) == buffers * (1 if scan else batch), "\n".join(whole)
    assert all(re.match(r"(ROOT )?%\S*(scatter|dynamic-update-slice)", line) for line in whole), "\n".join(whole)


@pytest.mark.parametrize("batch", [1, 8])
def test_small_decode_step_reads_weights_and_cache_once(batch):
    assert read_ratio(SMALL, batch) <= 1.1


@pytest.mark.slow  # ~30-40 s per AOT compile of 40 unscanned 13B layers on 2 cores
@pytest.mark.parametrize("batch", [1, 8])
def test_13b_decode_step_reads_weights_and_cache_once(batch):
    """Llama-2-13B shapes with SEED-X's vocabulary, fp32, 4096-token context, unscanned layers."""
    assert read_ratio(LlamaConfig.preset("llama2_13b", scan_layers=False), batch) <= 1.1


@pytest.mark.xfail(jax.default_backend() == "cpu", strict=True,
                   reason="blocked on XLA:CPU: it computes bf16 dots in f32, writing an f32 copy of every weight "
                          "matrix and of each layer's cache every token (measured 5.3x at batch 1, 12.6x at batch 8)")
@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 8])
def test_13b_bf16_decode_step_reads_weights_and_cache_once(batch):
    cfg = LlamaConfig.preset("llama2_13b", param_dtype="bfloat16", dtype="bfloat16", scan_layers=False)
    assert read_ratio(cfg, batch) <= 1.1
