"""fp32 parity of LlamaForCausalLM with transformers' eager Llama on tiny random configs.

Tolerance: max |logits diff| <= 1e-4 x max |reference logits|.
"""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seedx_jax.llama import LlamaConfig
from parity import max_rel_diff
from torch_llama import hf_llama, jax_from_torch

TOL = 1e-4


@pytest.fixture(scope="module", params=["llama_tiny", "llama_tiny_gqa"])
def pair(request):
    cfg = LlamaConfig.preset(request.param, num_hidden_layers=3)
    return cfg, hf_llama(cfg)


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "unscanned"])
def test_logits_match_transformers(pair, scan):
    cfg, ref = pair
    cfg = cfg.replace(scan_layers=scan)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 17))
    with torch.no_grad():
        out = ref(torch.tensor(ids), output_hidden_states=True)
    ours = jax_from_torch(cfg, ref)(jnp.asarray(ids))
    assert max_rel_diff(ours.logits, out.logits) <= TOL
    # SEED-X regresses images from the post-final-norm hidden state (= HF hidden_states[-1]).
    assert max_rel_diff(ours.hidden_states, out.hidden_states[-1]) <= TOL
    assert np.abs(np.asarray(ours.logits)).max() > 0.1  # not a degenerate near-zero output


def test_inputs_embeds_match_transformers(pair):
    cfg, ref = pair
    embeds = np.random.default_rng(1).normal(0, 0.5, (2, 9, cfg.hidden_size)).astype(np.float32)
    with torch.no_grad():
        want = ref(inputs_embeds=torch.tensor(embeds)).logits
    ours = jax_from_torch(cfg, ref)(inputs_embeds=jnp.asarray(embeds)).logits
    assert max_rel_diff(ours, want) <= TOL


def test_right_padding_does_not_change_real_tokens(pair):
    cfg, ref = pair
    model = jax_from_torch(cfg, ref)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, cfg.vocab_size, (1, 12))
    padded = np.concatenate([ids[:, :7], np.zeros((1, 5), ids.dtype)], axis=1)
    full = model(jnp.asarray(ids[:, :7])).logits
    pad = model(jnp.asarray(padded)).logits[:, :7]
    np.testing.assert_allclose(pad, full, rtol=0, atol=1e-5)


def test_bf16_compute_stays_close(pair):
    cfg, ref = pair
    ids = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits
    ours = jax_from_torch(cfg.replace(dtype="bfloat16"), ref)(jnp.asarray(ids)).logits
    assert ours.dtype == jnp.bfloat16
    assert max_rel_diff(ours.astype(jnp.float32), want) <= 5e-2  # bf16 has an 8-bit mantissa


@pytest.mark.slow  # ~12 s; the tiny configs above check the same code paths
def test_bench_size_logits_and_lora_gradients():
    """Accumulation at a realistic width: 4 layers, d=512, vocab 8192, seq 256."""
    import jax
    from flax import nnx
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    from seedx_jax.lora import LORA_TARGETS, LoraConfig
    from seedx_jax.losses import next_token_loss

    cfg = LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=4,
                      lora=LoraConfig(rank=16, alpha=32.0, dropout=0.0, modules_to_save=(), train_embeddings=False))
    ref = get_peft_model(hf_llama(cfg.replace(lora=None)), PeftLoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_TARGETS)))
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * torch.randn_like(p))
    ids = np.random.default_rng(4).integers(0, cfg.vocab_size, (2, 256))
    logits = ref(torch.tensor(ids)).logits
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size),
                                      torch.tensor(ids[:, 1:]).reshape(-1)).backward()
    ours = jax_from_torch(cfg, ref, strict=True)
    graphdef, lora, rest = nnx.split(ours, nnx.LoRAParam, ...)
    out, grads = jax.value_and_grad(
        lambda l: next_token_loss(nnx.merge(graphdef, l, rest)(jnp.asarray(ids)).logits, jnp.asarray(ids)))(lora)
    assert max_rel_diff(nnx.merge(graphdef, lora, rest)(jnp.asarray(ids)).logits, logits.detach()) <= TOL
    layer = ref.base_model.model.model.layers[2].mlp.down_proj
    got_a = np.asarray(grads["layers"]["mlp"]["down_proj"]["lora_a"][...][2])
    assert max_rel_diff(got_a, layer.lora_A.default.weight.grad.numpy().T) <= TOL


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
@pytest.mark.parametrize("scan", [True, False], ids=["scan", "unscanned"])
def test_remat_policies_keep_gradients_and_really_remat(remat, scan):
    import jax
    from flax import nnx

    from seedx_jax.llama import LlamaForCausalLM
    from seedx_jax.losses import next_token_loss

    ids = jnp.asarray(np.random.default_rng(5).integers(0, 256, (2, 16)))

    def grads(policy):
        cfg = LlamaConfig.preset("llama_tiny_gqa", remat=policy, scan_layers=scan)
        graphdef, params = nnx.split(LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))
        fn = jax.grad(lambda p: next_token_loss(nnx.merge(graphdef, p)(ids).logits, ids))
        return jax.jit(fn)(params), str(jax.make_jaxpr(fn)(params))

    want, plain = grads("none")
    got, text = grads(remat)
    assert "remat" not in plain and "remat" in text  # the jax.checkpoint primitive
    for (path, a), (_, b) in zip(nnx.to_flat_state(got), nnx.to_flat_state(want)):
        np.testing.assert_allclose(np.asarray(a[...]), np.asarray(b[...]), rtol=1e-5, atol=1e-7,
                                   err_msg=str(path))
