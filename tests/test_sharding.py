"""Sharding core on 8 fake CPU devices: meshes, the rules table, sharded creation and equivalence."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from seedx_jax import sharding
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.lora import LoraConfig, trainable_filter
from seedx_jax.losses import next_token_loss

CFG = LlamaConfig.preset("llama_tiny_gqa", lora=LoraConfig(rank=4, alpha=8.0, dropout=0.0))

# What the rules table must give on a (data=2, fsdp=2, tensor=2) mesh, written out by hand.
EXPECTED_SPECS = {
    "embed_tokens.embedding": P("tensor", "fsdp"),
    "layers.input_layernorm.scale": P(None, None),
    "layers.post_attention_layernorm.scale": P(None, None),
    "layers.self_attn.q_proj.kernel": P(None, "fsdp", "tensor"),
    "layers.self_attn.k_proj.kernel": P(None, "fsdp", "tensor"),
    "layers.self_attn.v_proj.kernel": P(None, "fsdp", "tensor"),
    "layers.self_attn.o_proj.kernel": P(None, "tensor", "fsdp"),
    "layers.mlp.gate_proj.kernel": P(None, "fsdp", "tensor"),
    "layers.mlp.up_proj.kernel": P(None, "fsdp", "tensor"),
    "layers.mlp.down_proj.kernel": P(None, "tensor", "fsdp"),
    "norm.scale": P(None),
    "lm_head.kernel": P("fsdp", "tensor"),
}
for _proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
    EXPECTED_SPECS[f"layers.{_proj}.lora_a"] = P(None, "fsdp", None)
    EXPECTED_SPECS[f"layers.{_proj}.lora_b"] = P(None, None, "tensor")
for _proj in ("self_attn.o_proj", "mlp.down_proj"):
    EXPECTED_SPECS[f"layers.{_proj}.lora_a"] = P(None, "tensor", None)
    EXPECTED_SPECS[f"layers.{_proj}.lora_b"] = P(None, None, "fsdp")


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 8, "conftest must create 8 fake CPU devices"
    return sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def _flat(state):
    return {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}


def test_mesh_shapes_and_axis_types():
    assert sharding.resolve_axis_sizes({"data": -1, "tensor": 2}, 8) == (4, 1, 2)
    assert sharding.resolve_axis_sizes({"fsdp": -1}, 8) == (1, 8, 1)
    with pytest.raises(ValueError, match="only one axis may be -1"):
        sharding.resolve_axis_sizes({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="multiply to 4, but there are 8 devices"):
        sharding.resolve_axis_sizes({"data": 2, "fsdp": 2}, 8)
    with pytest.raises(ValueError, match="cannot be split"):
        sharding.resolve_axis_sizes({"data": -1, "tensor": 3}, 8)
    # Two slices of 8: ICI inside a slice, DCN across (default: slices go to `data`).
    assert sharding.hybrid_mesh_shapes({"fsdp": -1, "tensor": 2}, 16, 2) == ((1, 4, 2), (2, 1, 1))
    assert sharding.hybrid_mesh_shapes({"fsdp": -1, "dcn_fsdp": 2}, 16, 2) == ((1, 8, 1), (1, 2, 1))
    mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 3


def test_parameters_are_created_sharded_by_the_rules_table(mesh):
    model = sharding.create_sharded(lambda: LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)), mesh)
    params = _flat(nnx.state(model, nnx.Param))
    assert set(params) == set(EXPECTED_SPECS)
    for name, var in params.items():
        arr = var[...]
        assert arr.sharding.mesh == mesh, name
        assert arr.sharding.spec == EXPECTED_SPECS[name], (name, arr.sharding.spec)
        # really distributed: each device holds 1/(product of used axes) of the parameter
        parts = np.prod([mesh.shape[a] for a in jax.tree.leaves(tuple(EXPECTED_SPECS[name]))])
        assert arr.addressable_shards[0].data.size * parts == arr.size, name
    # same values as an unsharded build from the same seed (up to 1 ulp: jit fuses the init)
    ref = _flat(nnx.state(LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)), nnx.Param))
    for name in ("layers.mlp.up_proj.kernel", "embed_tokens.embedding"):
        np.testing.assert_allclose(np.asarray(params[name][...]), np.asarray(ref[name][...]), rtol=1e-6)


def test_rules_overrides_and_errors(mesh):
    rules = sharding.rules_with_overrides({"embed": None, "batch": ["data"]})
    _, abstract = sharding.abstract_model(lambda: LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)), mesh, rules)
    flat = _flat(abstract)
    assert flat["layers.self_attn.q_proj.kernel"].sharding.spec == P(None, None, "tensor")
    assert isinstance(flat["lm_head.kernel"].get_raw_value(), jax.ShapeDtypeStruct)  # no memory
    with pytest.raises(ValueError, match="unknown logical axes"):
        sharding.rules_with_overrides({"embedding": "fsdp"})
    with pytest.raises(ValueError, match="not a mesh axis"):
        sharding.rules_with_overrides({"embed": "model"})


def test_undivisible_parameter_dims_are_replicated_with_a_warning(mesh, caplog):
    cfg = CFG.replace(vocab_size=255, lora=None)
    with caplog.at_level(logging.WARNING, logger="seedx_jax.sharding"):
        _, abstract = sharding.abstract_model(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)), mesh)
    assert _flat(abstract)["embed_tokens.embedding"].sharding.spec == P(None, "fsdp")
    assert "embed_tokens/embedding: dim 0 (vocab, size 255) is not divisible" in caplog.text


def test_batch_divisibility_is_checked_by_name(mesh):
    sharding.check_batch_divisible(8, mesh)
    with pytest.raises(ValueError, match=r"batch_size=6 is not divisible by the batch mesh axes "
                                         r"\{'data': 2, 'fsdp': 2\} \(product 4\)"):
        sharding.check_batch_divisible(6, mesh)


def _loss_and_grads(model, ids):
    graphdef, trainable, rest = nnx.split(model, trainable_filter(CFG.lora), ...)

    @jax.jit
    def f(trainable, rest, ids):
        def loss(t):
            return next_token_loss(nnx.merge(graphdef, t, rest)(ids).logits, ids)
        return jax.value_and_grad(loss)(trainable)

    return f(trainable, rest, ids)


def test_sharded_forward_backward_equals_unsharded(mesh):
    model = LlamaForCausalLM(CFG, rngs=nnx.Rngs(1))
    for _, v in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)):
        v[...] = 0.05 * jax.random.normal(jax.random.key(2), v.shape)
    ids = jax.random.randint(jax.random.key(3), (8, 16), 0, CFG.vocab_size)
    loss, grads = _loss_and_grads(model, ids)

    sharded = sharding.create_sharded(lambda: LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)), mesh)
    nnx.update(sharded, sharding.shard_state(nnx.state(model), mesh))
    with jax.set_mesh(mesh):
        batch_spec = sharding.logical_to_spec(("batch", "seq"), mesh=mesh, shape=ids.shape)
        sids = jax.device_put(ids, jax.sharding.NamedSharding(mesh, batch_spec))
        s_loss, s_grads = _loss_and_grads(sharded, sids)
    assert batch_spec == P(("data", "fsdp"), None)
    np.testing.assert_allclose(float(s_loss), float(loss), rtol=1e-6)
    g, sg = _flat(grads), _flat(s_grads)
    assert set(g) == set(sg) and len(g) > 10
    for name in g:
        np.testing.assert_allclose(np.asarray(sg[name][...]), np.asarray(g[name][...]), rtol=1e-5,
                                   atol=1e-7, err_msg=name)


def test_activation_constraints_only_under_a_mesh(mesh):
    model = LlamaForCausalLM(CFG.replace(lora=None), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    ids = jnp.zeros((4, 8), jnp.int32)
    fwd = jax.jit(lambda s, i: nnx.merge(graphdef, s)(i).logits)
    assert "sharding_constraint" not in fwd.lower(state, ids).as_text()
    with jax.set_mesh(mesh):
        text = fwd.lower(sharding.shard_state(state, mesh), ids).as_text()
    # embeddings, q, MLP hidden, block output (the scanned block body appears once)
    assert text.count("sdy.sharding_constraint") == 4
    assert '<@mesh, [{"data", "fsdp"}, {}, {"tensor"}]> : tensor<4x8x160xf32>' in text  # MLP hidden


def test_abstract_state_compiles_ahead_of_time(mesh):
    graphdef, abstract = sharding.abstract_model(lambda: LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)), mesh)
    ids = jax.ShapeDtypeStruct((8, 16), jnp.int32)
    with jax.set_mesh(mesh):
        compiled = jax.jit(lambda s, i: nnx.merge(graphdef, s)(i).logits).lower(abstract, ids).compile()
    assert compiled.memory_analysis() is not None


def test_llama2_13b_lora_train_step_compiles_fsdp_sharded():
    """The real SEED-X LLM size, abstract only: parameter count and per-device memory of a step."""
    cfg = LlamaConfig.preset("llama2_13b", dtype="bfloat16", remat="full", lora=LoraConfig())
    mesh = sharding.make_mesh({"fsdp": -1})
    graphdef, abstract = sharding.abstract_model(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)), mesh)
    base = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))))
    total = sum(x.size for x in jax.tree.leaves(abstract))
    assert base == 13_019_243_520  # docs/architecture.md#components
    assert total - base == 40 * 32 * (4 * (5120 + 5120) + 3 * (5120 + 13824))  # LoRA r=32, 7 targets

    graphdef, trainable, rest = nnx.split(nnx.merge(graphdef, abstract), trainable_filter(cfg.lora), ...)

    def step(trainable, rest, ids):
        return jax.value_and_grad(
            lambda t: next_token_loss(nnx.merge(graphdef, t, rest)(ids).logits, ids))(trainable)

    ids = jax.ShapeDtypeStruct((8, 256), jnp.int32, sharding=jax.sharding.NamedSharding(
        mesh, sharding.logical_to_spec(("batch", "seq"), mesh=mesh)))
    with jax.set_mesh(mesh):
        memory = jax.jit(step).lower(trainable, rest, ids).compile().memory_analysis()
    # fp32 base weights split over the 8 fsdp shards; LoRA factors whose only large dim is a
    # tensor-parallel one (o/down lora_a, q/k/v/gate/up lora_b) stay replicated when tensor=1.
    ids_bytes = 8 * 256 * 4
    assert 4 * total / 8 < memory.argument_size_in_bytes - ids_bytes < 4 * base / 8 + 4 * (total - base)
