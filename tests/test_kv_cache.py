"""KV-cache decoding and greedy generation against full forwards and transformers `generate`."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seedx_jax.llama import KVCache, LlamaConfig, generate
from parity import max_rel_diff
from torch_llama import hf_llama, jax_from_torch


@pytest.fixture(scope="module", params=[("llama_tiny", True), ("llama_tiny_gqa", False)],
                ids=["mha-scan", "gqa-unscanned"])
def pair(request):
    preset, scan = request.param
    cfg = LlamaConfig.preset(preset, scan_layers=scan)
    ref = hf_llama(cfg, seed=3)
    return cfg, ref, jax_from_torch(cfg, ref)


def test_cached_decode_matches_full_forward(pair):
    cfg, _, model = pair
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12)))
    full = model(ids).logits
    cache = KVCache.init(cfg, 2, 16)
    out = model(ids[:, :5], positions=jnp.tile(jnp.arange(5), (2, 1)), cache=cache)
    assert max_rel_diff(out.logits, full[:, :5]) <= 1e-5
    cache = out.cache
    for t in range(5, 12):
        step = model(ids[:, t:t + 1], positions=jnp.full((2, 1), t), cache=cache)
        cache = step.cache
        assert max_rel_diff(step.logits[:, 0], full[:, t]) <= 1e-5, t


def test_greedy_generate_matches_transformers(pair):
    cfg, ref, model = pair
    prompt = np.random.default_rng(1).integers(3, cfg.vocab_size, (1, 7))
    with torch.no_grad():
        want = ref.generate(torch.tensor(prompt), max_new_tokens=16, do_sample=False,
                            eos_token_id=None, pad_token_id=0).numpy()[0, 7:]
    got = generate(model, prompt, 16)
    np.testing.assert_array_equal(np.asarray(got.tokens[0]), want)
    assert int(got.num_tokens[0]) == 16
    assert len(set(want.tolist())) > 1  # a non-trivial sequence

    stop = int(want[4])  # stop on the 5th token (first occurrence decides)
    first = int(np.argmax(want == stop))
    with torch.no_grad():
        want_stop = ref.generate(torch.tensor(prompt), max_new_tokens=16, do_sample=False,
                                 eos_token_id=stop, pad_token_id=0).numpy()[0, 7:]
    got = generate(model, prompt, 16, stop_token_ids=[stop], pad_token_id=0)
    np.testing.assert_array_equal(np.asarray(got.tokens[0, :first + 1]), want_stop[:first + 1])
    assert int(got.num_tokens[0]) == first + 1
    assert (np.asarray(got.tokens[0, first + 1:]) == 0).all()


def test_right_padded_batch_equals_rows_alone(pair):
    cfg, _, model = pair
    rng = np.random.default_rng(2)
    rows = [rng.integers(1, cfg.vocab_size, n) for n in (9, 4, 6)]
    batch = np.zeros((3, 9), np.int64)
    for i, r in enumerate(rows):
        batch[i, :len(r)] = r
    got = generate(model, batch, 10, prompt_lengths=[len(r) for r in rows])
    for i, r in enumerate(rows):
        alone = generate(model, r[None], 10)
        np.testing.assert_array_equal(np.asarray(got.tokens[i]), np.asarray(alone.tokens[0]), err_msg=f"row {i}")
