"""ResamplerXLV2 vs its PyTorch statement: SAME random weights in the `resampler.*` key layout.

Tolerance: max |diff| <= 1e-4 x max |reference| for both outputs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from seedx_jax.detokenizer import ResamplerXL, ResamplerXLConfig
from seedx_jax.detokenizer.params import load_resampler_xl
from torch_detokenizer import TorchResamplerXLV2
from parity import max_rel_diff, randomize_

CFG = ResamplerXLConfig.preset("tiny")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = randomize_(TorchResamplerXLV2(CFG.dim, CFG.depth, CFG.dim_head, CFG.heads, CFG.num_queries,
                                        CFG.embedding_dim, CFG.output1_dim, CFG.output2_dim, CFG.ff_mult))
    ours = ResamplerXL(CFG, rngs=nnx.Rngs(0))
    state = [("resampler." + k, v.detach().numpy()) for k, v in ref.state_dict().items()]
    state.append(("unet.conv_in.weight", np.zeros((2, 8, 3, 3), np.float32)))  # other half of the file
    report = load_resampler_xl(ours, state, strict=True)
    assert len(report.loaded) == len(state) - 1
    return ref, ours


@pytest.mark.parametrize("length", [9, 4, 16], ids=["L9", "L=queries", "L16"])
def test_outputs_match_torch(pair, length):
    ref, ours = pair
    x = np.random.default_rng(length).normal(size=(3, length, CFG.embedding_dim)).astype(np.float32)
    with torch.no_grad():
        want_prompt, want_pooled = ref(torch.tensor(x))
    prompt, pooled = ours(jnp.asarray(x))
    assert prompt.shape == (3, CFG.num_queries, CFG.output1_dim + CFG.output2_dim)
    assert pooled.shape == (3, CFG.output2_dim)
    assert max_rel_diff(prompt, want_prompt) <= 1e-4
    assert max_rel_diff(pooled, want_pooled) <= 1e-4


def test_release_size_and_bad_width():
    full = nnx.eval_shape(lambda: ResamplerXL(ResamplerXLConfig.preset("seedx_detokenizer"), rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(full))) == 61_245_696  # docs/architecture.md#components
    with pytest.raises(ValueError, match=r"features must be \[N, L, 16\], got shape \(1, 4, 15\)"):
        ResamplerXL(CFG, rngs=nnx.Rngs(0))(jnp.zeros((1, 4, 15)))
