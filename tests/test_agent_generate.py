"""SEED-X generation: the jitted decode loop with image-token forcing vs a step-by-step PyTorch
reference (full transformers forward every step, the official forcing rules of src/models/mllm/generation.py)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seedx_jax.agent.generate import ImageTokenForcing, generate_agent
from seedx_jax.llama.generate import Sampling
from parity import max_rel_diff
from test_agent import build_pair

BASE = 320  # SentencePiece pieces before the added tokens in the tiny vocabulary
IMG, IMG_END, IMAGE0 = BASE + 100, BASE + 101, BASE
SPAN = (IMG, *range(IMAGE0, IMAGE0 + 64), IMG_END)
FORCING = ImageTokenForcing(SPAN)
EOS = 2
TOL = 1e-4


def reference_generate(ref, prompt, cmp_mask, feats, positions, max_new):
    """Greedy, one full forward per step; `AutoImageTokenGenerationProcessor` written from the official rules."""
    with torch.no_grad():
        ids = torch.tensor(prompt)[None]
        args = (None, None, None) if feats is None else (torch.tensor(cmp_mask)[None], torch.tensor(feats),
                                                         torch.tensor(positions))
        embeds = ref.embed(ids, *args)
        seq, gen = list(prompt), []
        for _ in range(max_new):
            e = embeds if not gen else torch.cat([embeds, ref.llm.get_input_embeddings()(torch.tensor([gen]))], 1)
            out = ref.llm(inputs_embeds=e, output_hidden_states=True)
            scores = out.logits[0, -1].clone()
            if seq[-1] in SPAN[:-1]:
                nxt = SPAN[SPAN.index(seq[-1]) + 1]
                scores[nxt] = scores.max() + 10
            else:
                scores[list(SPAN[1:])] = 0.0
            tok = int(scores.argmax())
            gen.append(tok)
            seq.append(tok)
            if tok == EOS:
                break
        hidden = out.hidden_states[-1][0, len(prompt):]  # H[j]: input = generated token j
        feats_out = [ref.output_resampler(hidden[e - 64:e][None])[0].numpy()
                     for e, t in enumerate(gen) if t == IMG_END and e >= 64]
        return gen, feats_out


def prompt_with_image(rng, ends_with_img: bool):
    """BOS, text, one tile + global comprehension image (132 tokens), text[, <img>]."""
    text = list(rng.integers(3, BASE, size=5))
    image = [BASE + 102, *range(IMAGE0, IMAGE0 + 64), BASE + 103, IMG, *range(IMAGE0, IMAGE0 + 64), IMG_END]
    prompt = [1] + text + image + list(rng.integers(3, BASE, size=4)) + ([IMG] if ends_with_img else [])
    mask = np.zeros(len(prompt), bool)
    mask[7:71] = mask[73:137] = True
    return prompt, mask


@pytest.fixture(scope="module")
def pair():
    cfg, ours, ref = build_pair(seed=5)
    return cfg, ours, ref


def _run(ours, prompt, mask, feats, positions, max_new, **kw):
    return generate_agent(ours, np.asarray(prompt)[None], max_new_tokens=max_new, forcing=FORCING,
                          stop_token_ids=[EOS], ids_cmp_mask=mask[None], cmp_features=feats,
                          cmp_positions=positions, **kw)


def test_forced_image_span_ids_and_features_match_reference(pair):
    cfg, ours, ref = pair
    rng = np.random.default_rng(0)
    prompt, mask = prompt_with_image(rng, ends_with_img=True)
    feats = rng.normal(size=(2, 256, cfg.feature_dim)).astype(np.float32)
    positions = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
    want, want_feats = reference_generate(ref, prompt, mask, feats, positions, 72)
    got = _run(ours, prompt, mask, feats, positions, 72)
    n = int(got.num_tokens[0])
    assert got.tokens[0, :n].tolist() == want
    assert want[:65] == list(SPAN[1:])  # exactly 64 image tokens then </img>
    assert got.image_token_ends == [[64]] and len(want_feats) == 1
    assert max_rel_diff(got.image_features[0][0], want_feats[0]) < TOL


def test_model_chosen_img_mid_text_matches_reference(pair):
    cfg, ours, ref = pair
    rng = np.random.default_rng(1)
    prompt, mask = prompt_with_image(rng, ends_with_img=False)
    feats = rng.normal(size=(2, 256, cfg.feature_dim)).astype(np.float32)
    positions = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
    free = _run(ours, prompt, mask, feats, positions, 6).tokens[0]
    # Make <img> the favourite where the model picked free[2]: its lm_head row = 3 x that token's row.
    with torch.no_grad():
        ref.llm.lm_head.weight[IMG] = 3 * ref.llm.lm_head.weight[int(free[2])]
    ours.llm.lm_head.kernel[...] = ours.llm.lm_head.kernel[...].at[:, IMG].set(3 * ours.llm.lm_head.kernel[:, int(free[2])])
    want, want_feats = reference_generate(ref, prompt, mask, feats, positions, 90)
    got = _run(ours, prompt, mask, feats, positions, 90)
    n = int(got.num_tokens[0])
    assert got.tokens[0, :n].tolist() == want
    start = want.index(IMG)
    assert start <= 2 and want[start:start + 66] == list(SPAN)
    assert len(got.image_features[0]) == len(want_feats) >= 1
    for a, b in zip(got.image_features[0], want_feats):
        assert max_rel_diff(a, b) < TOL


def test_text_only_prompt_and_batch_rows_match_alone(pair):
    cfg, ours, ref = pair
    rng = np.random.default_rng(2)
    rows = [[1] + list(rng.integers(3, BASE, size=k)) for k in (9, 4)]
    want = [reference_generate(ref, r, None, None, None, 12)[0] for r in rows]
    batch = np.zeros((2, 10), np.int64)
    for i, r in enumerate(rows):
        batch[i, :len(r)] = r
    got = generate_agent(ours, batch, prompt_lengths=[10, 5], max_new_tokens=12, forcing=FORCING,
                         stop_token_ids=[EOS])
    for i in range(2):
        assert got.tokens[i, :got.num_tokens[i]].tolist() == want[i]


def test_forcing_rules_on_stub_logits():
    vocab = BASE + 330
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, vocab)), jnp.float32)
    last = jnp.asarray([IMG, IMAGE0 + 5, IMAGE0 + 63, 7])
    out = np.asarray(FORCING(logits, last))
    assert out[0].argmax() == IMAGE0 and out[1].argmax() == IMAGE0 + 6 and out[2].argmax() == IMG_END
    assert np.isinf(out[:3]).sum() == 3 * (vocab - 1)
    assert (out[3, list(SPAN[1:])] == 0.0).all() and out[3, IMG] == logits[3, IMG]  # <img> never suppressed
    assert out[3, IMAGE0 + 64] == logits[3, IMAGE0 + 64]  # unused image tokens are never touched
    negative = -jnp.abs(logits[3:]) - 1
    assert int(FORCING(negative, last[3:])[0].argmax()) in SPAN[1:]  # the official 0.0 quirk
    strict = ImageTokenForcing(SPAN, suppress_value=float("-inf"))
    assert int(strict(negative, last[3:])[0].argmax()) not in SPAN[1:]


def test_sampling_is_reproducible_and_keeps_the_span(pair):
    cfg, ours, _ = pair
    rng = np.random.default_rng(3)
    prompt, mask = prompt_with_image(rng, ends_with_img=True)
    feats = rng.normal(size=(2, 256, cfg.feature_dim)).astype(np.float32)
    positions = np.full((2, 2), 0.5, np.float32)
    hot = Sampling(temperature=1.5, top_k=50, top_p=0.9)
    a = _run(ours, prompt, mask, feats, positions, 80, sampling=hot, seed=7)
    b = _run(ours, prompt, mask, feats, positions, 80, sampling=hot, seed=7)
    c = _run(ours, prompt, mask, feats, positions, 80, sampling=hot, seed=8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert (a.tokens != c.tokens).any()
    assert a.tokens[0, :65].tolist() == list(SPAN[1:])
    greedy = _run(ours, prompt, mask, feats, positions, 80)
    top1 = _run(ours, prompt, mask, feats, positions, 80, sampling=Sampling(temperature=0.8, top_k=1), seed=3)
    np.testing.assert_array_equal(greedy.tokens, top1.tokens)


def test_context_and_sampling_errors(pair):
    cfg, ours, _ = pair
    with pytest.raises(ValueError, match="exceeds the model context of 1024"):
        generate_agent(ours, np.ones((1, 1000), int), max_new_tokens=100, forcing=FORCING, stop_token_ids=[EOS])
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="forcing span has 3 image tokens"):
        generate_agent(ours, np.ones((1, 4), int), max_new_tokens=4, forcing=ImageTokenForcing((1, 2, 3, 4, 5)),
                       stop_token_ids=[EOS])
