"""Reduced precision: bf16 compute over fp32 weights, int8 LLM weights (qwix), refusals at config time."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seedx_jax import cli, precision
from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.llama.config import LlamaConfig
from seedx_jax.llama.model import LlamaForCausalLM
from seedx_jax.lora import LoraConfig, merge_lora
from seedx_jax.nn.linear import Linear
from seedx_jax.precision import Precision
from seedx_jax.precision_accuracy import accuracy_table
from seedx_jax.quantization import Int8Linear, QuantizedWeight, quantize_int8, weight_bytes

TINY = LlamaConfig.preset("llama_tiny")


@nnx.jit
def _logits(model, ids):
    return model(ids).logits


def _ids(cfg, b=2, t=12, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, cfg.vocab_size)


@pytest.mark.parametrize("scan", [True, False])
def test_int8_replaces_every_linear_with_int8_weights_and_stays_close(scan):
    cfg = TINY.replace(scan_layers=scan)
    model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    ids = _ids(cfg)
    ref = _logits(model, ids)
    before = weight_bytes(model)
    quantize_int8(model)
    assert not [m for _, m in nnx.iter_modules(model) if isinstance(m, Linear)]
    weights = nnx.state(model, QuantizedWeight)
    kinds = {leaf.dtype for leaf in jax.tree.leaves(weights)}
    assert kinds == {jnp.dtype(jnp.int8), jnp.dtype(jnp.float32)}  # qvalues and scales
    q_proj = model.layers.self_attn.q_proj if scan else model.layers[0].self_attn.q_proj
    lead = (cfg.num_hidden_layers,) if scan else ()
    assert q_proj.qvalue[...].shape == (*lead, cfg.hidden_size, cfg.hidden_size)
    assert q_proj.scale[...].shape == (*lead, 1, cfg.hidden_size)  # one scale per layer and output channel
    assert weight_bytes(model) < 0.45 * before
    out = _logits(model, ids)
    err = float(jnp.abs(out - ref).max())
    assert 0 < err < 0.03 * float(jnp.abs(ref).max())  # changed (really int8), but only by rounding


def test_int8_layer_matches_its_dequantized_weight():
    """y = x @ (qvalue * scale): the scale is per output channel and the rounding is absmax int8."""
    linear = Linear(32, 16, logical_axes=("embed", "mlp"), rngs=nnx.Rngs(0))
    q = Int8Linear.from_linear(linear)
    kernel = linear.kernel[...]
    scale = q.scale[...]
    ratio = np.abs(kernel).max(0) / scale[0]  # absmax calibration, one scale per output channel
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    assert 127 <= ratio[0] <= 128 and np.abs(q.qvalue[...]).max() >= 126
    assert np.all(np.abs(kernel - q.qvalue[...] * scale) <= scale * 0.51)  # rounding, no clipping
    x = jax.random.normal(jax.random.key(2), (3, 5, 32))
    want = x @ (q.qvalue[...].astype(jnp.float32) * scale)
    np.testing.assert_allclose(q(x), want, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(q(x) - linear(x)).max()) < 0.01 * float(jnp.abs(linear(x)).max())


def test_int8_needs_merged_lora_and_quantizes_the_merged_kernel():
    cfg = TINY.replace(lora=LoraConfig(rank=4, alpha=8.0, dropout=0.0))
    model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    for _, m in nnx.iter_modules(model):  # a non-zero LoRA delta
        if isinstance(m, Linear) and m.lora is not None:
            m.lora_b[...] = 0.05 * jnp.ones_like(m.lora_b[...])
    with pytest.raises(ValueError, match="merge_lora"):
        quantize_int8(model)
    ids = _ids(cfg)
    ref = _logits(model, ids)
    merge_lora(model)
    quantize_int8(model)
    assert float(jnp.abs(_logits(model, ids) - ref).max()) < 0.03 * float(jnp.abs(ref).max())


def test_int8_precision_merges_a_lora_first():
    """What `--llm-weights int8` does to a LoRA checkpoint: the LoRA is folded in, then quantized."""
    cfg = TINY.replace(lora=LoraConfig(rank=4, alpha=8.0, dropout=0.0))
    model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    for _, m in nnx.iter_modules(model):
        if isinstance(m, Linear) and m.lora is not None:
            m.lora_b[...] = 0.05 * jnp.ones_like(m.lora_b[...])
    ids = _ids(cfg)
    ref = _logits(model, ids)
    without_lora = _logits(LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)), ids)  # same weights, LoRA B still zero
    got = _logits(Precision(llm_weights="int8").apply(model), ids)
    assert not any(isinstance(m, Int8Linear) for _, m in nnx.iter_modules(model))  # the caller's tree stays float
    assert float(jnp.abs(got - ref).max()) < 0.03 * float(jnp.abs(ref).max())
    assert float(jnp.abs(got - without_lora).max()) > 0.1 * float(jnp.abs(ref - without_lora).max())


def test_agent_int8_touches_only_the_llm():
    agent = SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(0))
    count = quantize_int8(agent)
    assert count == 8  # 7 stacked projections + lm_head
    assert all(not isinstance(m, Int8Linear) for _, m in nnx.iter_modules(agent.input_resampler))


def test_bf16_apply_keeps_fp32_weights_and_computes_in_bf16():
    model = LlamaForCausalLM(TINY, rngs=nnx.Rngs(0))
    assert Precision().apply(model) is model  # float32 compute, float weights: nothing to rebuild
    bf16 = Precision(compute_dtype="bfloat16").apply(model)
    assert bf16 is not model and bf16.config.dtype == "bfloat16" and bf16.config.param_dtype == "float32"
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(bf16))} == {jnp.dtype(jnp.float32)}
    assert bf16.layers.self_attn.q_proj.kernel[...] is model.layers.self_attn.q_proj.kernel[...]  # shared
    ids = _ids(TINY)
    out, ref = _logits(bf16, ids), _logits(model, ids)
    assert out.dtype == jnp.bfloat16 and ref.dtype == jnp.float32
    err = float(jnp.abs(out.astype(jnp.float32) - ref).max())
    assert 0 < err < 0.05 * float(jnp.abs(ref).max())


def test_configure_sets_every_nested_compute_dtype_only():
    cfg = Precision(compute_dtype="bfloat16").configure(AgentConfig.preset("tiny"))
    assert cfg.llm.dtype == cfg.input_resampler.dtype == cfg.output_resampler.dtype == "bfloat16"
    assert cfg.llm.param_dtype == cfg.input_resampler.param_dtype == "float32"


def test_accuracy_table_bounds():
    rows = {r.variant: r for r in accuracy_table(TINY, batch=2, new_tokens=24, variants=("bf16", "int8"))}
    for row in rows.values():
        assert 0 < row.max_logit_error < 0.1 * row.logit_scale, row
        assert row.mean_logit_error < 0.02 * row.logit_scale, row
        assert row.agreement >= 0.9, row
    assert rows["int8"].mean_logit_error > 0  # the int8 model is not the fp32 one under another name


@pytest.mark.parametrize("fields, message", [
    (dict(compute_dtype="float16"), "Precision.compute_dtype='float16' is not one of"),
    (dict(llm_weights="int4"), "Precision.llm_weights='int4' is not one of"),
    (dict(unet_weights="int8"), "Precision.unet_weights='int8': quantized weights are built for the LLM only"),
    (dict(vit_weights="int8"), "Precision.vit_weights='int8': quantized weights are built for the LLM only"),
])
def test_unsupported_precisions_are_refused_in_one_line(fields, message):
    with pytest.raises(ValueError, match=message) as err:
        Precision(**fields)
    assert "\n" not in str(err.value)


def test_int8_is_refused_for_training():
    Precision(compute_dtype="bfloat16").check_training()
    with pytest.raises(ValueError, match=r"Precision.llm_weights='int8' is inference only"):
        Precision(llm_weights="int8").check_training()


def _device(platform, kind="x", capability=None):
    return SimpleNamespace(platform=platform, device_kind=kind, compute_capability=capability)


def test_bf16_needs_a_device_with_bf16(monkeypatch):
    assert precision.supports_bf16(_device("tpu"))
    assert precision.supports_bf16(_device("gpu", capability="9.0"))
    assert not precision.supports_bf16(_device("gpu", "Tesla V100", capability="7.0"))
    with pytest.raises(ValueError, match=r"Tesla V100 \(gpu\) has no native bf16"):
        Precision(compute_dtype="bfloat16").check_device([_device("gpu", "Tesla V100", "7.0")])
    Precision().check_device([_device("gpu", "Tesla V100", "7.0")])  # fp32 runs anywhere
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not precision.supports_bf16(_device("cpu"))
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.supports_bf16(_device("cpu"))


def test_cli_refuses_bf16_without_device_support_before_opening_anything(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    missing = tmp_path / "no_such_checkpoint"  # never opened: the refusal comes first
    code = cli.main(["generate", "--checkpoint", str(missing), "--prompt", "a cat", "--compute-dtype", "bfloat16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("seedx-jax generate: error: --compute-dtype bfloat16: ")
    assert "no native bf16" in err and "\n" not in err


@pytest.mark.parametrize("argv, bad", [
    (["--llm-weights", "int4"], "--llm-weights"),
    (["--compute-dtype", "float16"], "--compute-dtype"),
])
def test_cli_refuses_unknown_precision_names(argv, bad, tmp_path, capsys):
    code = cli.main(["chat", "--checkpoint", str(tmp_path), "--prompt", "hi", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and bad in err and len(err.splitlines()) == 1


def test_reconstruct_takes_no_llm_weights(tmp_path, capsys):
    code = cli.main(["reconstruct", "--checkpoint", str(tmp_path), "--image", "x.png", "--llm-weights", "int8"])
    assert code == 2 and "--llm-weights" in capsys.readouterr().err


def test_precision_round_trips_through_dicts():
    p = Precision(compute_dtype="bfloat16", llm_weights="int8")
    assert Precision.from_dict(p.to_dict()) == p
    assert dataclasses.asdict(p)["unet_weights"] == "float"
