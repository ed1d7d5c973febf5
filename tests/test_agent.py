"""SeedXAgent forward vs a PyTorch statement (transformers LlamaForCausalLM fed inputs_embeds + torch
resamplers, as src/models/mllm/seed_x.py) loading the same released-layout weights, fp32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.params import load_agent
from parity import max_rel_diff
from seedx_fixtures import TorchAgent
from torch_llama import state_numpy

TOL = 1e-4  # relative, fp32
N = 64  # image tokens per image


def build_pair(seed=0):
    cfg = AgentConfig.preset("tiny")
    ref = TorchAgent(cfg, seed).float().eval()
    ours = SeedXAgent(cfg, rngs=nnx.Rngs(1))
    load_agent(ours, state_numpy(ref))
    return cfg, ours, ref


def batch(cfg, seed=0):
    """Two rows, T=300: row 0 = tile + global comprehension image, text, one generated image;
    row 1 = text, one comprehension image, text, one generated image, padding."""
    rng = np.random.default_rng(seed)
    t, vocab = 300, cfg.llm.vocab_size
    ids = rng.integers(3, 320, size=(2, t))
    cmp = np.zeros((2, t), bool)
    gen = np.zeros((2, t), bool)
    cmp[0, 1:1 + N] = cmp[0, 67:67 + N] = True
    gen[0, 200:200 + N] = True
    cmp[1, 10:10 + N] = True
    gen[1, 150:150 + N] = True
    ids[cmp | gen] = vocab - 330  # <img_00000>; the comprehension slots are overwritten anyway
    labels = np.where(rng.random((2, t)) < 0.5, ids, -100)
    labels[1, 260:] = -100
    c = cfg.feature_dim
    return dict(input_ids=ids, ids_cmp_mask=cmp, ids_gen_mask=gen,
                cmp_features=rng.normal(size=(3, 256, c)).astype(np.float32),
                cmp_positions=np.array([[0.5, 0.5], [0.5, 0.5], [0.25, 0.75]], np.float32),
                gen_targets=rng.normal(size=(2, 256, c)).astype(np.float32), labels=labels)


def reference(ref, b):
    with torch.no_grad():
        args = [torch.from_numpy(b[k]) for k in ("input_ids", "ids_cmp_mask", "cmp_features", "cmp_positions",
                                                 "ids_gen_mask", "gen_targets", "labels")]
        return [x.numpy() for x in ref(*args)]


def test_forward_and_losses_match_pytorch():
    cfg, ours, ref = build_pair()
    b = batch(cfg)
    logits, hidden, pred, lm, rec, total = reference(ref, b)
    out = nnx.jit(lambda m, b: m(**b))(ours, {k: jnp.asarray(v) for k, v in b.items()})
    assert max_rel_diff(out.logits, logits) < TOL
    assert max_rel_diff(out.hidden_states, hidden) < TOL
    assert max_rel_diff(out.gen_features, pred) < TOL
    for got, want in ((out.lm_loss, lm), (out.rec_loss, rec), (out.loss, total)):
        assert abs(float(got) - float(want)) / abs(float(want)) < TOL
    assert float(rec) > 0.1 and abs(float(total) - float(lm) - 6 * float(rec)) < 1e-5


def test_gradients_match_pytorch():
    cfg, ours, ref = build_pair(seed=3)
    b = batch(cfg, seed=3)
    args = [torch.from_numpy(b[k]) for k in ("input_ids", "ids_cmp_mask", "cmp_features", "cmp_positions",
                                             "ids_gen_mask", "gen_targets", "labels")]
    ref(*args)[-1].backward()
    grads = nnx.grad(lambda m: m(**{k: jnp.asarray(v) for k, v in b.items()}).loss)(ours)
    pairs = {
        "patch_pos_embed": (grads.patch_pos_embed, ref.patch_pos_embed.grad.numpy()),
        "input_resampler.query": (grads.input_resampler.query, ref.input_resampler.query.grad.numpy()),
        "output_resampler.kv_proj": (grads.output_resampler.kv_proj.kernel,
                                     ref.output_resampler.kv_proj.weight.grad.numpy().T),
        "embed_tokens": (grads.llm.embed_tokens.embedding, ref.llm.model.embed_tokens.weight.grad.numpy()),
    }
    for name, (got, want) in pairs.items():
        assert np.abs(want).max() > 0, name
        assert max_rel_diff(got[...], want) < TOL, name


def test_scatter_order_and_patch_positions_matter():
    cfg, ours, _ = build_pair()
    b = {k: jnp.asarray(v) for k, v in batch(cfg).items()}
    base = ours.embed(b["input_ids"], b["ids_cmp_mask"], b["cmp_features"], b["cmp_positions"])
    swapped = ours.embed(b["input_ids"], b["ids_cmp_mask"], b["cmp_features"][::-1], b["cmp_positions"][::-1])
    assert not np.allclose(base[0, 1:65], swapped[0, 1:65])
    moved = ours.embed(b["input_ids"], b["ids_cmp_mask"], b["cmp_features"], b["cmp_positions"] * 0)
    assert not np.allclose(base[1, 10:74], moved[1, 10:74])
    np.testing.assert_array_equal(base[:, 140:150], moved[:, 140:150])  # text rows untouched


def test_slot_count_errors_name_the_mask():
    cfg, ours, _ = build_pair()
    b = batch(cfg)
    b["ids_cmp_mask"][0, 0] = True
    with pytest.raises(ValueError, match="ids_cmp_mask marks 193 positions but 3 images x 64"):
        ours(**{k: jnp.asarray(v) for k, v in b.items()})
    b = batch(cfg)
    with pytest.raises(ValueError, match="cmp_positions must be"):
        ours.embed(jnp.asarray(b["input_ids"]), jnp.asarray(b["ids_cmp_mask"]), jnp.asarray(b["cmp_features"]))


def test_no_generation_targets_gives_zero_rec_loss():
    cfg, ours, _ = build_pair()
    b = {k: jnp.asarray(v) for k, v in batch(cfg).items()}
    b["gen_targets"] = b["gen_targets"][:0]
    b["ids_gen_mask"] = jnp.zeros_like(b["ids_gen_mask"])
    out = ours(**b)
    assert float(out.rec_loss) == 0.0 and float(out.loss) == pytest.approx(float(out.lm_loss))


def test_checkpoint_keys_are_checked():
    cfg, ours, ref = build_pair()
    state = state_numpy(ref)
    with pytest.raises(ValueError, match="unmatched source key: vision.x"):
        load_agent(ours, state + [("vision.x", np.zeros(1))])
    with pytest.raises(ValueError, match="missing parameter: patch_pos_embed"):
        load_agent(ours, [(k, v) for k, v in state if k != "patch_pos_embed"])


class _FeaturesAsViews(nnx.Module):
    """Stands in for the ViT in the training loss: the "pixels" are the features themselves."""

    def __call__(self, views):
        return views


def test_training_loss_on_row_slots_matches_pytorch():
    """`train.stages.mllm_loss` (each row's images in its own padded slots, as the data pipeline
    batches them) against the PyTorch statement on the flat image list, same weights."""
    from seedx_jax.train.stages import MLLMTrainee, mllm_loss

    cfg, ours, ref = build_pair(seed=5)
    b = batch(cfg, seed=5)
    *_, lm, rec, total = reference(ref, b)
    feats, targets, c = b["cmp_features"], b["gen_targets"], cfg.feature_dim
    cmp = np.zeros((2, 3, 256, c), np.float32)  # row 0: images 0, 1; row 1: image 2; the rest padding
    cmp[0, :2], cmp[1, 0], cmp[1, 1:] = feats[:2], feats[2], 9.0
    pos = np.zeros((2, 3, 2), np.float32)
    pos[0, :2], pos[1, 0] = b["cmp_positions"][:2], b["cmp_positions"][2]
    gen = np.full((2, 2, 256, c), 7.0, np.float32)  # one target per row + a padding slot
    gen[0, 0], gen[1, 0] = targets
    rows = dict(input_ids=b["input_ids"], labels=b["labels"], ids_cmp_mask=b["ids_cmp_mask"],
                ids_gen_mask=b["ids_gen_mask"], cmp_pixels=cmp, cmp_positions=pos,
                cmp_valid=np.array([[1, 1, 0], [1, 0, 0]], bool), gen_pixels=gen,
                gen_valid=np.array([[1, 0], [1, 0]], bool))
    loss, aux = mllm_loss(MLLMTrainee(_FeaturesAsViews(), ours), {k: jnp.asarray(v) for k, v in rows.items()},
                          jax.random.key(0))
    for got, want in ((aux["lm_loss"], lm), (aux["rec_loss"], rec), (loss, total)):
        assert abs(float(got) - float(want)) / abs(float(want)) < TOL
