"""LoRA against peft on a tiny Llama: logits, gradients, merge/unmerge, the trainable filter.

Tolerances: logits max |diff| <= 1e-4 x max |ref|; each gradient max |diff| <= 1e-4 x max |ref grad|.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from peft import LoraConfig as PeftLoraConfig, get_peft_model

from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.llama.params import LLAMA_HF_RULES
from seedx_jax.lora import LORA_TARGETS, LoraConfig, mask_frozen_rows, merge_lora, trainable_filter, unmerge_lora
from seedx_jax.losses import next_token_loss
from parity import max_rel_diff
from torch_llama import hf_llama, jax_from_torch

TOL = 1e-4
LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0)  # scaling 2, to catch a missing alpha / r


def peft_model(cfg: LlamaConfig):
    base = hf_llama(cfg)
    model = get_peft_model(base, PeftLoraConfig(
        r=LORA.rank, lora_alpha=LORA.alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
        modules_to_save=list(LORA.modules_to_save)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft initialises B to zero, which would hide a broken LoRA path
                p.copy_(0.05 * torch.randn_like(p))
            elif "modules_to_save" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    # SEED-X also trains the full embedding and lm_head matrices.
    model.base_model.model.model.embed_tokens.weight.requires_grad_(True)
    model.base_model.model.lm_head.weight.requires_grad_(True)
    return model.eval()


@pytest.fixture(scope="module", params=[True, False], ids=["scan", "unscanned"])
def models(request):
    cfg = LlamaConfig.preset("llama_tiny_gqa", lora=LORA, scan_layers=request.param)
    ref = peft_model(cfg)
    return cfg, ref, jax_from_torch(cfg, ref, strict=True)


def _target(torch_name: str):
    """(our dotted path with layer index, transposed?) for a torch parameter name."""
    for rule in LLAMA_HF_RULES:
        if (values := rule.compiled_source.match(torch_name)) is not None and rule.target:
            return rule.compiled_targets[0].format(values), rule.transform is not None
    raise KeyError(torch_name)


def _lookup(flat: dict, path: str):
    if path in flat:
        return flat[path]
    parts = path.split(".")
    i = next(i for i, p in enumerate(parts) if p.isdigit())
    return flat[".".join(parts[:i] + parts[i + 1:])][int(parts[i])]


def _flat(state) -> dict:
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def test_logits_match_peft(models):
    cfg, ref, ours = models
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 13))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits
    assert max_rel_diff(ours(jnp.asarray(ids)).logits, want) <= TOL


def test_trainable_filter_selects_exactly_what_peft_trains(models):
    cfg, ref, ours = models
    peft_trainable = {_target(n)[0] for n, p in ref.named_parameters() if p.requires_grad}
    state = nnx.state(ours, trainable_filter(cfg.lora))
    ours_paths = set(_flat(state))
    if cfg.scan_layers:  # expand stacked paths to per-layer names
        peft_trainable = {re.sub(r"\.\d+\.", ".", p) for p in peft_trainable}
    assert ours_paths == peft_trainable
    assert any(p.endswith("lora_a") for p in ours_paths) and "norm.scale" in ours_paths
    assert not any(p.endswith(".kernel") and "lm_head" not in p for p in ours_paths)


def test_gradients_match_torch_autograd(models):
    cfg, ref, ours = models
    rng = np.random.default_rng(1)
    ids = rng.integers(0, cfg.vocab_size, (2, 13))
    labels = ids.copy()
    labels[:, :3] = -100
    ref.zero_grad()
    logits = ref(torch.tensor(ids)).logits
    F.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), torch.tensor(labels[:, 1:]).reshape(-1),
                    ignore_index=-100).backward()

    graphdef, trainable, rest = nnx.split(ours, trainable_filter(cfg.lora), ...)

    def loss_fn(trainable):
        model = nnx.merge(graphdef, trainable, rest)
        return next_token_loss(model(jnp.asarray(ids)).logits, jnp.asarray(labels))

    grads = _flat(jax.grad(loss_fn)(trainable))
    checked = set()
    for name, p in ref.named_parameters():
        if not p.requires_grad:
            continue
        path, transposed = _target(name)
        want = p.grad.numpy().T if transposed else p.grad.numpy()
        assert np.abs(want).max() > 0, name
        assert max_rel_diff(_lookup(grads, path), want) <= TOL, name
        checked.add(re.sub(r"\.\d+\.", ".", path) if cfg.scan_layers else path)
    assert checked == set(grads)  # every gradient we compute was compared


def test_merge_matches_peft_and_unmerge_restores(models):
    cfg, ref, ours = models
    ids = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (1, 9)))
    before_state = _flat(nnx.state(ours, nnx.Param))
    before_logits = ours(ids).logits

    merge_lora(ours)
    merged = _flat(nnx.state(ours, nnx.Param))
    assert max_rel_diff(ours(ids).logits, before_logits) <= TOL  # branch off, delta in the kernel
    merged_ref = dict(peft_model(cfg).merge_and_unload().named_parameters())
    for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        path, _ = _target(name)
        assert max_rel_diff(_lookup(merged, path), merged_ref[name].detach().numpy().T) <= 1e-6
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(ours)

    unmerge_lora(ours)
    restored = _flat(nnx.state(ours, nnx.Param))
    for key, value in before_state.items():
        np.testing.assert_allclose(restored[key], value, rtol=0, atol=1e-6, err_msg=key)
    assert max_rel_diff(ours(ids).logits, before_logits) <= TOL


def test_lora_dropout_uses_the_key_and_is_off_without_it():
    cfg = LlamaConfig.preset("llama_tiny", lora=LoraConfig(rank=4, alpha=4.0, dropout=0.5))
    lora_model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    for _, v in nnx.to_flat_state(nnx.state(lora_model, nnx.LoRAParam)):
        v[...] = 0.1 * jnp.ones_like(v[...])  # B starts at zero, which would hide dropout
    ids = jnp.arange(8)[None]
    a = lora_model(ids, dropout_rng=jax.random.key(0)).logits
    b = lora_model(ids, dropout_rng=jax.random.key(0)).logits
    c = lora_model(ids, dropout_rng=jax.random.key(1)).logits
    d = lora_model(ids).logits
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1e-3 and float(jnp.abs(a - d).max()) > 1e-3


def test_mask_frozen_rows_keeps_only_the_new_token_rows():
    cfg = LlamaConfig.preset("llama_tiny", lora=LoraConfig(rank=2, alpha=2.0, embedding_rows=(250, 256)))
    model = nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))
    grads = jax.tree.map(lambda v: jnp.ones(v.shape, v.dtype), nnx.state(model, trainable_filter(cfg.lora)))
    masked = _flat(mask_frozen_rows(grads, cfg.lora))
    emb, head = masked["embed_tokens.embedding"], masked["lm_head.kernel"]
    assert emb[:250].sum() == 0 and emb[250:].min() == 1
    assert head[:, :250].sum() == 0 and head[:, 250:].min() == 1
    assert masked["layers.self_attn.q_proj.lora_a"].min() == 1  # other gradients untouched
