"""The serving layout: a scanned LLM's layers unrolled (`seedx_jax.llama.layout`) compute what the scanned model
computes, with the non-layer weights shared."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM, generate
from seedx_jax.llama.layout import unstack_agent_layers, unstack_layers
from seedx_jax.lora import LoraConfig
from seedx_jax.precision import Precision


def _randomised(model):
    """Every parameter random (LoRA B included: zeros would hide a lost LoRA branch)."""
    leaves, tree = jax.tree.flatten(nnx.state(model))
    rng = np.random.default_rng(0)
    nnx.update(model, tree.unflatten([jnp.asarray(rng.normal(0, 0.05, x.shape), x.dtype) for x in leaves]))
    return model


def test_unstacked_llm_matches_the_scanned_one():
    cfg = LlamaConfig.preset("llama_tiny", lora=LoraConfig(rank=4, alpha=8.0))
    scanned = _randomised(LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))
    unrolled = unstack_layers(scanned)
    assert not unrolled.config.scan_layers and len(unrolled.layers) == cfg.num_hidden_layers
    assert unrolled.embed_tokens.embedding.get_value() is scanned.embed_tokens.embedding.get_value()  # shared
    # each layer's variables are the unscanned model's own: no `layers` axis in their sharding metadata
    assert unrolled.layers[0].mlp.up_proj.kernel.get_metadata()["logical_axes"] == ("embed", "mlp")
    ids = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 9)))
    want, got = scanned(ids).logits, unrolled(ids).logits
    assert float(jnp.abs(want).max()) > 0.01  # not a model of zeros
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(generate(unrolled, ids, 6).tokens, generate(scanned, ids, 6).tokens)
    assert unstack_layers(unrolled) is unrolled


def test_unstacked_agent_keeps_its_config_in_step():
    agent = unstack_agent_layers(SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(0)))
    assert agent.config.llm == agent.llm.config and not agent.config.llm.scan_layers
    # a rebuild from the config (what `Precision.apply` does) finds the same parameter tree
    assert Precision(compute_dtype="float32").apply(agent).config == agent.config
