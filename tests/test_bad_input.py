"""Bad configs and inputs fail early with a message naming the field and the values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seedx_jax import sharding
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM, generate
from seedx_jax.lora import LoraConfig


@pytest.mark.parametrize("fields, message", [
    (dict(hidden_size=100, num_attention_heads=3),
     "LlamaConfig.hidden_size=100 is not divisible by num_attention_heads=3"),
    (dict(num_attention_heads=4, num_key_value_heads=3),
     "LlamaConfig.num_attention_heads=4 is not divisible by num_key_value_heads=3"),
    (dict(hidden_size=12, num_attention_heads=4), "head_dim=3 .* must be even"),
    (dict(vocab_size=0), "LlamaConfig.vocab_size=0 must be positive"),
    (dict(dtype="fp16"), "LlamaConfig.dtype='fp16' is not one of"),
    (dict(remat="everything"), "remat='everything' is not one of"),
    (dict(attention_impl="flash"), "attention_impl='flash' is not one of"),
    (dict(lora=LoraConfig(embedding_rows=(250, 300))), r"embedding_rows=\(250, 300\) exceeds vocab_size=256"),
])
def test_inconsistent_config_fails_at_build_time(fields, message):
    with pytest.raises(ValueError, match=message):
        LlamaConfig.preset("llama_tiny", **fields)


def test_bad_lora_and_unknown_fields():
    with pytest.raises(ValueError, match="LoraConfig.rank=0 must be positive"):
        LoraConfig(rank=0)
    with pytest.raises(ValueError, match=r"target_modules has unknown names \['qkv_proj'\]"):
        LoraConfig(target_modules=("qkv_proj",))
    with pytest.raises(ValueError, match=r"LlamaConfig has no fields \['hidden'\]"):
        LlamaConfig.from_dict({"preset": "llama_tiny", "hidden": 3})
    with pytest.raises(ValueError, match="unknown LlamaConfig preset 'llama3'"):
        LlamaConfig.preset("llama3")


@pytest.fixture(scope="module")
def model():
    return LlamaForCausalLM(LlamaConfig.preset("llama_tiny"), rngs=nnx.Rngs(0))


def test_token_ids_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match=r"input_ids holds ids in \[0, 300\] but vocab_size=256"):
        model(jnp.array([[0, 5, 300]]))
    with pytest.raises(ValueError, match=r"prompt_ids holds ids in \[-1, 5\] but vocab_size=256"):
        generate(model, np.array([[-1, 5]]), 4)
    with pytest.raises(ValueError, match=r"stop_token_ids holds ids in \[999, 999\]"):
        generate(model, np.array([[1, 5]]), 4, stop_token_ids=[999])


def test_bad_shapes_and_lengths(model):
    with pytest.raises(ValueError, match=r"inputs_embeds must be \[batch, seq, 64\], got shape \(1, 3, 32\)"):
        model(inputs_embeds=jnp.zeros((1, 3, 32)))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match=r"prompt_lengths must be \[2\] values in \[1, 3\]"):
        generate(model, np.ones((2, 3), int), 4, prompt_lengths=[3, 4])
    with pytest.raises(ValueError, match="max_new_tokens=0 must be >= 1"):
        generate(model, np.ones((1, 3), int), 0)


def test_batch_not_divisible_by_the_mesh(model):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, ids: nnx.merge(graphdef, s)(ids).logits)
    with jax.set_mesh(mesh), pytest.raises(
            ValueError, match=r"batch=6 is not divisible by the batch mesh axes \{'data': 2, 'fsdp': 2\}"):
        fwd(sharding.shard_state(state, mesh), jnp.zeros((6, 4), jnp.int32))
