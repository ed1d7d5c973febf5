"""The mapping-table loader: prefixes, ignored buffers, and ONE report of every problem."""
import numpy as np
import pytest
from flax import nnx

from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.llama.params import load_hf_llama
from torch_llama import hf_llama, state_numpy

CFG = LlamaConfig.preset("llama_tiny")


@pytest.fixture(scope="module")
def tensors():
    return state_numpy(hf_llama(CFG))


def test_agent_prefix_and_buffers(tensors):
    model = LlamaForCausalLM(CFG, rngs=nnx.Rngs(0))
    agent_style = [("llm." + k, v) for k, v in tensors]
    agent_style.append(("llm.model.layers.0.self_attn.rotary_emb.inv_freq", np.zeros(8, np.float32)))
    report = load_hf_llama(model, agent_style, strict=True)
    assert len(report.loaded) == len(tensors) and report.ignored == [
        "llm.model.layers.0.self_attn.rotary_emb.inv_freq"]
    want = dict(tensors)["model.layers.1.mlp.down_proj.weight"].T
    np.testing.assert_array_equal(np.asarray(model.layers.mlp.down_proj.kernel[...][1]), want)


def test_all_problems_in_one_report(tensors):
    broken = [(k, v) for k, v in tensors if k != "model.layers.1.mlp.up_proj.weight"]
    broken = [(k, v[:-1] if k == "model.norm.weight" else v) for k, v in broken]
    broken.append(("model.layers.0.self_attn.qkv.weight", np.zeros((3, 3), np.float32)))
    with pytest.raises(ValueError) as err:
        load_hf_llama(LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)), broken, strict=True)
    text = str(err.value)
    assert "shape mismatch: model.norm.weight (63,) -> norm.scale (64,)" in text
    assert "missing parameter: layers.mlp.up_proj.kernel (layers [1])" in text
    assert "unmatched source key: model.layers.0.self_attn.qkv.weight" in text
    # non-strict: an unknown key alone is reported, not fatal
    extra = list(tensors) + [("vision.extra", np.zeros(2, np.float32))]
    report = load_hf_llama(LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)), extra)
    assert report.unmatched == ["vision.extra"]
