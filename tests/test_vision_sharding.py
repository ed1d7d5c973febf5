"""Real-size structure (parameter counts of docs/architecture.md) and sharding of the vision modules."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from seedx_jax import sharding
from seedx_jax.nn import Buffer
from seedx_jax.vision import INPUT_RESAMPLER, OUTPUT_RESAMPLER, QwenViT, Resampler, VisionConfig


def _count(state) -> int:
    return sum(x.size for x in jax.tree.leaves(state))


def test_parameter_counts_match_the_release():
    vit = nnx.eval_shape(lambda: QwenViT(VisionConfig.preset("qwen_vit_g_448"), rngs=nnx.Rngs(0)))
    assert _count(nnx.state(vit)) == 1_935_610_624  # incl. the fixed 256 x 4096 sincos table
    assert _count(nnx.state(vit, Buffer)) == 256 * 4096
    for cfg, want in ((INPUT_RESAMPLER, 126_525_440), (OUTPUT_RESAMPLER, 88_637_440)):
        assert _count(nnx.state(nnx.eval_shape(lambda: Resampler(cfg, rngs=nnx.Rngs(0))))) == want


def test_vit_g_compiles_fsdp_sharded_in_bf16():
    cfg = VisionConfig.preset("qwen_vit_g_448", dtype="bfloat16", param_dtype="bfloat16")
    mesh = sharding.make_mesh({"fsdp": -1})
    graphdef, abstract = sharding.abstract_model(lambda: QwenViT(cfg, rngs=nnx.Rngs(0)), mesh)
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(abstract)}
    assert flat["resblocks.c_fc.kernel"].sharding.spec == P(None, "fsdp", None)
    assert flat["attn_pool.attn.q_proj.kernel"].sharding.spec == P("fsdp", None)
    views = jax.ShapeDtypeStruct((8, 448, 448, 3), jnp.float32, sharding=jax.sharding.NamedSharding(
        mesh, P(("data", "fsdp"))))
    with jax.set_mesh(mesh):
        compiled = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(abstract, views).compile()
    params_per_device = 2 * _count(abstract) / 8
    assert compiled.memory_analysis().argument_size_in_bytes < 1.05 * params_per_device + 8 * 448 * 448 * 3 * 4 / 8


def test_sharded_vit_equals_unsharded():
    cfg = VisionConfig.preset("qwen_vit_tiny")
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = QwenViT(cfg, rngs=nnx.Rngs(0))
    images = jax.random.normal(jax.random.key(1), (4, 112, 112, 3))
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    want = forward(state, images)
    with jax.set_mesh(mesh):
        got = forward(sharding.shard_state(state, mesh), images)
    # sharded matmuls sum in another order: compare relative to the feature scale
    assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-5 * np.abs(np.asarray(want)).max()
