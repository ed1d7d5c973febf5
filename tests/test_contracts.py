"""Contracts at the public entry points: every documented input form works (and gives the same result
as the canonical form), every plausible wrong form is a one-line `ValueError` naming the argument.

Covered: the de-tokenizer (`Detokenizer.generate` / `reconstruct`, `negative_features`, `to_uint8`,
`load_detokenizer`), the sampler (`sample_latents`, `Conditioning`), the tokenizer, the image and
weight loaders, `load_model`, `process_anyres` and `ViewEncoder`.

"Before tracing": the `untraced` fixture replaces every jitted internal the entry points reach
(`detokenizer.model._resample / _vit_forward / _encode_mean / _decode`, `diffusion.sampling._denoise`,
and per test a `ViewEncoder`'s `_run`) with a function raising `Reached`, an AssertionError. A check
that only fires inside a traced function (or a shape error from XLA) then fails the test instead of
satisfying `pytest.raises(ValueError)`. Messages are matched whole (`^...$`), so a ValueError from
somewhere else does not pass either.

Tiny models (`DetokenizerConfig.preset("tiny")`, a 56 px `qwen_vit_tiny`), 32 px images and 1 sampler
step; the accepted forms reuse the shapes of one canonical call so XLA compiles few programs.
"""
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from seedx_jax.agent.tokenizer import SeedXTokenizer, train_sentencepiece
from seedx_jax.checkpoint import load_model, save_model
from seedx_jax.convert.export import _Exporter
from seedx_jax.detokenizer import model as detok_model
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig, negative_features, to_uint8
from seedx_jax.detokenizer.params import DETOKENIZER_RULES, load_detokenizer, load_resampler_xl
from seedx_jax.diffusion import sampling
from seedx_jax.diffusion.sampling import Conditioning, SamplerConfig, sample_latents
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.llama.params import LLAMA_HF_RULES, load_hf_llama
from seedx_jax.sources import ArraySource
from seedx_jax.vision import QwenViT, VisionConfig
from seedx_jax.vision.anyres import process_anyres
from seedx_jax.vision.encode import ViewEncoder
from seedx_jax.vision.image_io import ImageInputError, load_image, load_images
from seedx_jax.vision.params import load_qwen_vit, vit_rules
from seedx_jax.weights import dense_rules, load_weights

D, N, L, H, W = 16, 2, 4, 32, 32  # feature width, images, feature tokens, image side (tiny preset)
LATENT = H // 2  # the tiny VAE downsamples by 2
ONE_STEP = SamplerConfig(num_steps=1)
_rng = np.random.default_rng(0)
FEATURES = _rng.normal(size=(N, L, D)).astype(np.float32)
NEGATIVE = _rng.normal(size=(1, L, D)).astype(np.float32)
NOISE = _rng.normal(size=(N, LATENT, LATENT, 4)).astype(np.float32)
CONDITION = _rng.uniform(size=(N, H, W, 3)).astype(np.float32)
VIEWS = _rng.normal(size=(N, 56, 56, 3)).astype(np.float32)
CONTEXT = _rng.normal(size=(N, 4, 24)).astype(np.float32)  # the tiny U-Net: 4 queries x 24, pooled 20
POOLED = _rng.normal(size=(N, 20)).astype(np.float32)
TIME_IDS = np.tile(np.array([[H, W, 0, 0, H, W]], np.float32), (N, 1))


def nan_at(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x.flat[1] = np.nan
    return x


class Reached(AssertionError):
    """A jitted internal ran: the input was not refused before tracing."""


def reached(name: str):
    def run(*args, **kwargs):
        raise Reached(f"{name} was reached")

    return run


@pytest.fixture
def untraced(monkeypatch):
    for name in ("_resample", "_vit_forward", "_encode_mean", "_decode"):
        monkeypatch.setattr(detok_model, name, reached(name))
    monkeypatch.setattr(sampling, "_denoise", reached("_denoise"))


def host_init(make, seed: int):
    """`make()`'s module with every variable drawn on the host, N(0, 0.05^2): an eager init compiles a
    program per parameter shape (some 20 s for the tiny de-tokenizer on 2 cores); no contract here
    depends on the init."""
    graphdef, state = nnx.split(nnx.eval_shape(make))
    rng = np.random.default_rng(seed)
    return nnx.merge(graphdef, jax.tree.map(lambda x: jnp.asarray(0.05 * rng.standard_normal(x.shape), x.dtype), state))


def zeroed(model):
    """`model` with every variable set to zeros in place, so that a load that writes nothing shows."""
    nnx.update(model, jax.tree.map(lambda x: jnp.asarray(np.zeros(x.shape, x.dtype)), nnx.state(model)))
    return model


@pytest.fixture(scope="module")
def detok():
    return host_init(lambda: Detokenizer(DetokenizerConfig.preset("tiny"), rngs=nnx.Rngs(0)), 0)


@pytest.fixture(scope="module")
def detok_edit():
    return host_init(lambda: Detokenizer(DetokenizerConfig.preset("tiny_edit"), rngs=nnx.Rngs(0)), 1)


@pytest.fixture(scope="module")
def vit():
    return QwenViT(VisionConfig.preset("qwen_vit_tiny", image_size=56, output_dim=D), rngs=nnx.Rngs(3))


# -- Detokenizer.generate ----------------------------------------------------------------------

CANONICAL = dict(features=jnp.asarray(FEATURES), negative=jnp.asarray(NEGATIVE), height=H, width=W,
                 sampler=ONE_STEP, noise=jnp.asarray(NOISE))


def generate(model, **overrides):
    args = {**CANONICAL, **overrides}
    return np.asarray(model.generate(args.pop("features"), args.pop("negative"), **args))


@pytest.fixture(scope="module")
def canonical(detok):
    return generate(detok)


@pytest.mark.parametrize("overrides", [
    pytest.param(dict(features=FEATURES, negative=NEGATIVE, noise=NOISE), id="numpy-arrays"),
    pytest.param(dict(negative=jnp.asarray(np.repeat(NEGATIVE, N, axis=0))), id="negative-per-sample"),
    pytest.param(dict(height=np.int64(H), width=np.int32(W)), id="numpy-int-sides"),
])
def test_generate_accepts_documented_forms(detok, canonical, overrides):
    np.testing.assert_allclose(generate(detok, **overrides), canonical, rtol=1e-5, atol=1e-5)


def test_generate_computes_bfloat16_features_in_float32(detok):
    features = jnp.asarray(FEATURES, jnp.bfloat16)
    np.testing.assert_array_equal(generate(detok, features=features),
                                  generate(detok, features=features.astype(jnp.float32)))


def test_generate_takes_a_negative_of_another_length(detok):
    """`negative [1 or N, L', D]`: the 256-token path-B negative with 64 regressed tokens, say (the
    official code stacks them, which needs L' = L)."""
    out = generate(detok, negative=_rng.normal(size=(1, 2 * L, D)).astype(np.float32))
    assert out.shape == (N, H, W, 3) and np.isfinite(out).all()


def test_generate_seeds(detok):
    def run(seed):
        return generate(detok, noise=None, seed=seed)

    first = run(0)
    np.testing.assert_array_equal(run(np.uint32(0)), first)
    assert np.abs(run(2 ** 32 - 1) - first).max() > 1e-3


def test_stage2_condition_images_numpy_jax_or_none(detok_edit):
    want = generate(detok_edit, condition_images=jnp.asarray(CONDITION))
    np.testing.assert_array_equal(generate(detok_edit, condition_images=CONDITION), want)
    unconditioned = generate(detok_edit)  # None: a zero condition latent
    assert unconditioned.shape == want.shape and np.isfinite(unconditioned).all()


def _shape_error(name, shape):
    return rf"^{name} must be \[N, L, 16\] ViT-space features, got shape {re.escape(str(shape))}$"


def _side_error(text):
    return rf"^{text} must be a positive multiple of 8 \(VAE x U-Net downsampling\)$"


SEED_ERROR = r"must be an integer in \[0, 2\*\*32\)$"
GENERATE_REFUSED = [
    ("features-list", dict(features=FEATURES.tolist()), r"^features must be a jax or numpy array, got list$"),
    ("features-int", dict(features=FEATURES.astype(np.int32)),
     r"^features has dtype int32; expected floating point values$"),
    ("features-unbatched", dict(features=FEATURES[0]), _shape_error("features", (L, D))),
    ("features-width", dict(features=FEATURES[..., :15]), _shape_error("features", (N, L, 15))),
    ("features-empty", dict(features=FEATURES[:0]), _shape_error("features", (0, L, D))),
    ("features-no-tokens", dict(features=FEATURES[:, :0]), _shape_error("features", (N, 0, D))),
    ("features-nan", dict(features=nan_at(FEATURES)), r"^features holds 1 NaN and 0 infinite values$"),
    ("negative-width", dict(negative=NEGATIVE[..., :8]), _shape_error("negative", (1, L, 8))),
    ("negative-batch", dict(negative=np.repeat(NEGATIVE, 3, axis=0)),
     r"^negative batch 3 must be 1 or match features batch 2$"),
    ("negative-nan", dict(negative=nan_at(NEGATIVE)), r"^negative holds 1 NaN and 0 infinite values$"),
    ("height-not-multiple", dict(height=30), _side_error("height=30")),
    ("width-zero", dict(width=0), _side_error("width=0")),
    ("height-float", dict(height=32.0), _side_error("height=32.0")),
    ("width-bool", dict(width=True), _side_error("width=True")),
    ("sampler-dict", dict(sampler={"num_steps": 1}), r"^sampler must be a SamplerConfig, got dict$"),
    ("seed-negative", dict(seed=-1), "^seed=-1 " + SEED_ERROR),
    ("seed-float", dict(seed=1.5), r"^seed=1.5 " + SEED_ERROR),
    ("seed-too-large", dict(seed=2 ** 32), "^seed=4294967296 " + SEED_ERROR),
    ("noise-size", dict(noise=NOISE[:, :8, :8]),
     r"^noise has shape \(2, 8, 8, 4\); 32x32 needs \(2, 16, 16, 4\) \(NHWC\)$"),
    ("noise-batch", dict(noise=NOISE[:1]), r"^noise has shape \(1, 16, 16, 4\); 32x32 needs \(2, 16, 16, 4\)"),
    ("noise-nchw", dict(noise=NOISE.transpose(0, 3, 1, 2)), r"^noise has shape \(2, 4, 16, 16\); 32x32 needs"),
    ("noise-int", dict(noise=NOISE.astype(np.int32)), r"^noise has dtype int32; expected floating point values$"),
    ("noise-nan", dict(noise=nan_at(NOISE)), r"^noise holds 1 NaN and 0 infinite values$"),
    ("condition-on-stage-1", dict(condition_images=CONDITION),
     r"^condition_images need a stage-2 de-tokenizer \(unet in_channels=8\)$"),
]
EDIT_REFUSED = [
    ("condition-batch", dict(condition_images=CONDITION[:1]),
     r"^condition_images must be \(2, 32, 32, 3\) \(NHWC, resized to height x width\), got \(1, 32, 32, 3\)$"),
    ("condition-nchw", dict(condition_images=CONDITION.transpose(0, 3, 1, 2)),
     r"^condition_images must be \(2, 32, 32, 3\) .*, got \(2, 3, 32, 32\)$"),
    ("condition-size", dict(condition_images=CONDITION[:, :24]),
     r"^condition_images must be .*, got \(2, 24, 32, 3\)$"),
    ("condition-uint8", dict(condition_images=(CONDITION * 255).astype(np.uint8)),
     r"^condition_images has dtype uint8; expected floating point values$"),
    ("condition-minus-one-to-one", dict(condition_images=CONDITION * 2 - 1),
     r"^condition_images hold values in \[-0\.\d+, 0\.\d+\]; generate takes \[0, 1\]$"),
    ("condition-nan", dict(condition_images=nan_at(CONDITION)),
     r"^condition_images holds 1 NaN and 0 infinite values$"),
]


@pytest.mark.parametrize("model, overrides, message",
                         [pytest.param("detok", o, m, id=i) for i, o, m in GENERATE_REFUSED]
                         + [pytest.param("detok_edit", o, m, id=i) for i, o, m in EDIT_REFUSED])
def test_generate_refuses_before_tracing(request, untraced, model, overrides, message):
    with pytest.raises(ValueError, match=message):
        generate(request.getfixturevalue(model), **overrides)


# -- Detokenizer.reconstruct, negative_features, to_uint8 ------------------------------------------

def test_reconstruct_numpy_or_jax_views(detok, vit):
    args = dict(height=H, width=W, sampler=ONE_STEP, noise=NOISE)
    want = np.asarray(detok.reconstruct(vit, jnp.asarray(VIEWS), **args))
    np.testing.assert_array_equal(np.asarray(detok.reconstruct(vit, VIEWS, **args)), want)


_VIEWS_ERROR = r"; the ViT takes \[V >= 1, S, S, 3\] \(NHWC, square, S a multiple of 14\)$"
RECONSTRUCT_REFUSED = [
    ("unbatched", dict(images=VIEWS[0]), r"^images has shape \(56, 56, 3\)" + _VIEWS_ERROR),
    ("nchw", dict(images=VIEWS.transpose(0, 3, 1, 2)), r"^images has shape \(2, 3, 56, 56\)" + _VIEWS_ERROR),
    ("not-square", dict(images=VIEWS[:, :, :42]), r"^images has shape \(2, 56, 42, 3\)" + _VIEWS_ERROR),
    ("side-not-patches", dict(images=VIEWS[:, :50, :50]), r"^images has shape \(2, 50, 50, 3\)" + _VIEWS_ERROR),
    ("empty", dict(images=VIEWS[:0]), r"^images has shape \(0, 56, 56, 3\)" + _VIEWS_ERROR),
    ("uint8", dict(images=np.zeros(VIEWS.shape, np.uint8)), r"^images has dtype uint8; the ViT takes CLIP-normalised"),
    ("anyres-image", dict(images=process_anyres(Image.new("RGB", (56, 56)), ("1x1",), base=56)),
     r"^images is an AnyResImage; pass its .pixels \[V, S, S, 3\]$"),
    ("nan", dict(images=nan_at(VIEWS)), r"^images holds 1 NaN and 0 infinite values$"),
    ("height", dict(height=30), _side_error("height=30")),
    ("noise", dict(noise=NOISE[:1]), r"^noise has shape \(1, 16, 16, 4\); 32x32 needs \(2, 16, 16, 4\)"),
    ("seed", dict(seed=-3), "^seed=-3 " + SEED_ERROR),
]


@pytest.mark.parametrize("overrides, message", [pytest.param(o, m, id=i) for i, o, m in RECONSTRUCT_REFUSED])
def test_reconstruct_refuses_before_the_vit_runs(detok, vit, untraced, overrides, message):
    args = {**dict(images=VIEWS, height=H, width=W, sampler=ONE_STEP, noise=NOISE), **overrides}
    with pytest.raises(ValueError, match=message):
        detok.reconstruct(vit, args.pop("images"), **args)


def test_reconstruct_and_negative_features_refuse_other_vits(detok, vit, untraced):
    wide = nnx.eval_shape(lambda: QwenViT(vit.config.replace(output_dim=32), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"^vit output_dim=32 does not match the de-tokenizer's embedding_dim=16$"):
        detok.reconstruct(wide, VIEWS, height=H, width=W)
    for call in (lambda: detok.reconstruct(detok, VIEWS), lambda: negative_features(detok)):
        with pytest.raises(ValueError, match=r"^vit must be a QwenViT, got Detokenizer$"):
            call()
    for pooled in ("yes", 1, None):
        with pytest.raises(ValueError, match=rf"^pooled={pooled!r} must be True or False$"):
            negative_features(vit, pooled=pooled)


def test_negative_features_pooled_or_not(vit):
    assert negative_features(vit).shape == (1, 64, D)
    assert negative_features(vit, pooled=False).shape == (1, 256, D)


PIXELS = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.5, 2.0]], np.float32).reshape(1, 1, 2, 3)
UINT8 = np.array([[0, 128, 255], [0, 191, 255]], np.uint8).reshape(1, 1, 2, 3)  # round half to even: 127.5 -> 128


@pytest.mark.parametrize("images", [PIXELS, jnp.asarray(PIXELS), jnp.asarray(PIXELS, jnp.bfloat16)],
                         ids=["numpy", "jax", "jax-bfloat16"])
def test_to_uint8_forms(images):
    out = to_uint8(images)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, UINT8)


@pytest.mark.parametrize("images, message", [
    pytest.param(UINT8, r"^images must be a float jax or numpy array in \[-1, 1\], got uint8$", id="uint8"),
    pytest.param(PIXELS.tolist(), r"^images must be a float jax or numpy array in \[-1, 1\], got list$", id="list"),
    pytest.param(PIXELS[0], r"^images has shape \(1, 2, 3\); to_uint8 takes \[N, H, W, 3\]$", id="unbatched"),
    pytest.param(nan_at(PIXELS), r"^images holds 1 NaN and 0 infinite values$", id="nan"),
])
def test_to_uint8_refuses(images, message):
    with pytest.raises(ValueError, match=message):
        to_uint8(images)


# -- sample_latents, Conditioning -----------------------------------------------------------------

POSITIVE = Conditioning(CONTEXT, POOLED, TIME_IDS)
NEGATIVE_COND = Conditioning(CONTEXT[::-1].copy(), POOLED[::-1].copy(), TIME_IDS)


def sample(unet, positive=None, negative=None, **overrides):
    positive = Conditioning(*map(jnp.asarray, POSITIVE)) if positive is None else positive
    negative = Conditioning(*map(jnp.asarray, NEGATIVE_COND)) if negative is None else negative
    args = {**dict(config=ONE_STEP, noise=jnp.asarray(NOISE)), **overrides}
    return np.asarray(sample_latents(unet, positive, negative, **args))


@pytest.fixture(scope="module")
def sampled(detok):
    return sample(detok.unet)


@pytest.mark.parametrize("overrides", [
    pytest.param(dict(positive=POSITIVE, negative=NEGATIVE_COND, noise=NOISE), id="numpy-arrays"),
    pytest.param(dict(positive=POSITIVE._replace(time_ids=TIME_IDS.astype(np.int32))), id="integer-time-ids"),
    pytest.param(dict(latent_size=(LATENT, LATENT)), id="noise-and-matching-latent-size"),
    pytest.param(dict(latent_size=[LATENT, LATENT]), id="latent-size-list"),
])
def test_sample_latents_accepts_documented_forms(detok, sampled, overrides):
    np.testing.assert_array_equal(sample(detok.unet, **overrides), sampled)


def test_sample_latents_seeded_draw_is_the_noise_of_that_seed(detok):
    drawn = sample(detok.unet, noise=None, latent_size=(LATENT, LATENT), seed=7)
    noise = jax.random.normal(jax.random.key(7), NOISE.shape, jnp.float32)
    np.testing.assert_array_equal(drawn, sample(detok.unet, noise=noise))


def test_sample_latents_bfloat16_context_is_computed_in_float32(detok):
    context = jnp.asarray(CONTEXT, jnp.bfloat16)
    np.testing.assert_array_equal(sample(detok.unet, positive=POSITIVE._replace(context=context)),
                                  sample(detok.unet, positive=POSITIVE._replace(context=context.astype(jnp.float32))))


def test_sample_latents_without_negative_when_guidance_is_off(detok):
    config = SamplerConfig(num_steps=1, guidance_scale=1.0)
    alone = np.asarray(sample_latents(detok.unet, POSITIVE, config=config, noise=NOISE))
    np.testing.assert_array_equal(sample(detok.unet, config=config), alone)  # the negative is unused


SAMPLE_REFUSED = [
    ("positive-dict", dict(positive=dict(POSITIVE._asdict())),
     r"^positive must be a Conditioning\(context, pooled, time_ids\), got dict$"),
    ("positive-tuple", dict(positive=tuple(POSITIVE)), r"^positive must be a Conditioning.*, got tuple$"),
    ("context-list", dict(positive=POSITIVE._replace(context=CONTEXT.tolist())),
     r"^positive.context must be a jax or numpy array, got list$"),
    ("context-int", dict(positive=POSITIVE._replace(context=CONTEXT.astype(np.int32))),
     r"^positive.context has dtype int32; expected floating point values$"),
    ("context-unbatched", dict(positive=POSITIVE._replace(context=CONTEXT[0])),
     r"^positive.context has shape \(4, 24\); expected \[B, T, C\]$"),
    ("context-width", dict(positive=POSITIVE._replace(context=CONTEXT[..., :16]), negative=NEGATIVE_COND._replace(
        context=CONTEXT[..., :16])), r"^context must be \[2, T, 24\] to match sample batch 2, got \(2, 4, 16\)$"),
    ("pooled-width", dict(positive=POSITIVE._replace(pooled=POOLED[:, :8]), negative=NEGATIVE_COND._replace(
        pooled=POOLED[:, :8])), r"^pooled must be \[2, 20\] to match sample batch 2, got \(2, 8\)$"),
    ("time-ids-bool", dict(positive=POSITIVE._replace(time_ids=TIME_IDS > 0)),
     r"^positive.time_ids has dtype bool; expected numbers$"),
    ("negative-batch", dict(negative=Conditioning(*(x[:1] for x in NEGATIVE_COND))),
     r"^negative has shapes \[\(1, 4, 24\), \(1, 20\), \(1, 6\)\]; they must match positive's "
     r"\[\(2, 4, 24\), \(2, 20\), \(2, 6\)\]$"),
    ("negative-length", dict(negative=NEGATIVE_COND._replace(context=np.zeros((N, 7, 24), np.float32))),
     r"^negative has shapes \[\(2, 7, 24\), .*\]; they must match positive's"),
    ("negative-nan", dict(negative=NEGATIVE_COND._replace(pooled=nan_at(POOLED))),
     r"^negative.pooled holds 1 NaN and 0 infinite values$"),
    ("config-dict", dict(config={"num_steps": 1}), r"^config must be a SamplerConfig, got dict$"),
    ("no-noise-no-size", dict(noise=None), r"^sample_latents needs `noise` or `latent_size`$"),
    ("latent-size-int", dict(noise=None, latent_size=LATENT),
     r"^latent_size=16 must be \(height, width\): two positive integers$"),
    ("latent-size-three", dict(noise=None, latent_size=(LATENT,) * 3), r"^latent_size=\(16, 16, 16\) must be"),
    ("latent-size-float", dict(noise=None, latent_size=(16.0, 16)), r"^latent_size=\(16.0, 16\) must be"),
    ("latent-size-zero", dict(noise=None, latent_size=(0, 16)), r"^latent_size=\(0, 16\) must be"),
    ("latent-size-not-multiple", dict(noise=None, latent_size=(6, 8)),
     r"^sample height/width \(6, 8\) must be multiples of 4 \(images: multiples of 32\)$"),
    ("noise-unbatched", dict(noise=NOISE[0]),
     r"^noise has shape \(16, 16, 4\); sample_latents takes \[2, h, w, 4\] \(the batch of `positive`\)$"),
    ("noise-batch", dict(noise=NOISE[:1]), r"^noise has shape \(1, 16, 16, 4\); sample_latents takes \[2, h, w, 4\]"),
    ("noise-and-other-latent-size", dict(latent_size=(8, 8)),
     r"^noise has shape \(2, 16, 16, 4\); sample_latents takes \[2, 8, 8, 4\]"),
    ("noise-int", dict(noise=NOISE.astype(np.int32)), r"^noise has dtype int32; expected floating point values$"),
    ("noise-nan", dict(noise=nan_at(NOISE)), r"^noise holds 1 NaN and 0 infinite values$"),
    ("seed-negative", dict(noise=None, latent_size=(LATENT, LATENT), seed=-1), "^seed=-1 " + SEED_ERROR),
    ("seed-float", dict(noise=None, latent_size=(LATENT, LATENT), seed=0.0), r"^seed=0.0 " + SEED_ERROR),
    ("cond-latents-on-stage-1", dict(cond_latents=NOISE),
     r"^cond_latents given but the U-Net has in_channels=4; stage 2 needs 8$"),
]


@pytest.mark.parametrize("overrides, message", [pytest.param(o, m, id=i) for i, o, m in SAMPLE_REFUSED])
def test_sample_latents_refuses_before_tracing(detok, untraced, overrides, message):
    with pytest.raises(ValueError, match=message):
        sample(detok.unet, **overrides)


def test_sample_latents_refuses_guidance_without_negative(detok, untraced):
    with pytest.raises(ValueError, match=r"^guidance_scale=7.5 needs `negative` conditioning"):
        sample_latents(detok.unet, POSITIVE, config=ONE_STEP, noise=NOISE)


@pytest.mark.parametrize("cond_latents, message", [
    (NOISE[:1], r"^cond_latents must be \(2, 16, 16, 4\) like the noise, got \(1, 16, 16, 4\)$"),
    (nan_at(NOISE), r"^cond_latents holds 1 NaN and 0 infinite values$"),
], ids=["batch", "nan"])
def test_sample_latents_refuses_bad_condition_latents(detok_edit, untraced, cond_latents, message):
    with pytest.raises(ValueError, match=message):
        sample(detok_edit.unet, cond_latents=cond_latents)


# -- the tokenizer -----------------------------------------------------------------------------

SENTENCES = ["Question: what is in the picture? Answer: a red car on the road.",
             "[INST] Generate an image: a cat sitting on a blue sofa [/INST] Here is a picture.",
             "Describe the image in detail. The image shows 3 dogs and 12 birds."]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer")
    model = train_sentencepiece(str(root / "sp.model"), SENTENCES * 20, 320)
    SeedXTokenizer(model).save(str(root / "folder"))
    return root


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return SeedXTokenizer(str(tokenizer_dir / "sp.model"))


class UserPath:
    """A caller's own os.PathLike, neither str nor pathlib."""

    def __init__(self, path):
        self.path = str(path)

    def __fspath__(self):
        return self.path


TEXT = "a red car <img> on <loc-3> the road"


def test_tokenizer_paths_str_pathlib_or_pathlike(tok, tokenizer_dir):
    want = tok.encode(TEXT)
    for path in (tokenizer_dir / "sp.model", UserPath(tokenizer_dir / "sp.model")):
        assert SeedXTokenizer(path).encode(TEXT) == want
    for folder in (str(tokenizer_dir / "folder"), tokenizer_dir / "folder", UserPath(tokenizer_dir / "folder")):
        assert SeedXTokenizer.from_dir(folder).encode(TEXT) == want


def test_encode_forms(tok):
    ids = tok.encode(TEXT)
    assert tok.encode(TEXT, add_bos=True) == [tok.bos_id] + ids and tok.encode("") == []


@pytest.mark.parametrize("ids", [
    lambda ids: ids, tuple, lambda ids: (i for i in ids), lambda ids: [np.int32(i) for i in ids],
    lambda ids: np.asarray(ids, np.int64), lambda ids: np.asarray(ids, np.uint16), lambda ids: jnp.asarray(ids),
], ids=["list", "tuple", "generator", "numpy-ints", "numpy-int64", "numpy-uint16", "jax"])
def test_decode_forms(tok, ids):
    want = tok.encode(TEXT, add_bos=True)
    assert tok.decode(ids(want)) == tok.decode(want) == "<s>a red car <img> on <loc-3> the road"
    assert tok.decode(ids(want), skip_special_tokens=True) == "a red car <img> on <loc-3> the road"
    assert tok.decode([]) == tok.decode(np.zeros(0, np.int32)) == ""


@pytest.mark.parametrize("call, message", [
    (lambda t: t.encode(None), r"^text must be a str, got NoneType$"),
    (lambda t: t.encode(b"a cat"), r"^text must be a str, got bytes$"),
    (lambda t: t.encode(["a cat"]), r"^text must be a str, got list$"),
    (lambda t: t.encode("a cat", add_bos="yes"), r"^add_bos='yes' must be True or False$"),
    (lambda t: t.decode([5, -1]), r"^ids holds id -1 outside the vocabulary of 650 tokens$"),
    (lambda t: t.decode([5, 650]), r"^ids holds id 650 outside the vocabulary of 650 tokens$"),
    (lambda t: t.decode(np.array([10 ** 6])), r"^ids holds id 1000000 outside the vocabulary of 650 tokens$"),
    (lambda t: t.decode([1.0, 2.0]), r"^ids must be a flat sequence of integer token ids, got float64 values"),
    (lambda t: t.decode(jnp.array([1.5])), r"^ids must be a flat sequence of integer token ids, got float32"),
    (lambda t: t.decode([True, False]), r"^ids must be a flat sequence of integer token ids, got bool"),
    (lambda t: t.decode(np.array([[5, 6]])), r"^ids must be .* of shape \(1, 2\)$"),
    (lambda t: t.decode([[5], [6, 7]]), r"^ids must be a flat sequence of token ids$"),
    (lambda t: t.decode("56"), r"^ids must be a sequence of token ids, got str$"),
    (lambda t: t.decode(5), r"^ids must be a sequence of token ids, got int$"),
    (lambda t: t.decode([5], skip_special_tokens=None), r"^skip_special_tokens=None must be True or False$"),
    (lambda t: SeedXTokenizer(None), r"^tokenizer: sp_model_file must be a path \(str or os.PathLike\), got NoneType$"),
    (lambda t: SeedXTokenizer.from_dir(None), r"^tokenizer: path must be a path \(str or os.PathLike\), got NoneType$"),
    (lambda t: SeedXTokenizer(t.sp_model_file, added_tokens=["<img>"]),
     r"^tokenizer: added_tokens must map token strings to int ids, got list$"),
    (lambda t: SeedXTokenizer(t.sp_model_file, added_tokens={k: str(v) for k, v in t.added_tokens.items()}),
     r"^tokenizer: added_tokens must map token strings to int ids, got dict$"),
], ids=["encode-none", "encode-bytes", "encode-list", "add-bos-str", "decode-negative", "decode-vocab-size",
        "decode-huge", "decode-floats", "decode-jax-floats", "decode-bools", "decode-2d", "decode-ragged",
        "decode-str", "decode-int", "skip-special-none", "constructor-none", "from-dir-none",
        "added-tokens-list", "added-tokens-str-ids"])
def test_tokenizer_refuses(tok, call, message):
    with pytest.raises(ValueError, match=message):
        call(tok)


# -- load_image, load_images, process_anyres, ViewEncoder -----------------------------------------

IMAGE = _rng.integers(0, 256, size=(30, 60, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "a.png"
    Image.fromarray(IMAGE).save(path)
    return path


@pytest.mark.parametrize("source", [str, pathlib.Path, UserPath, lambda p: p.read_bytes(),
                                    lambda p: Image.open(p)], ids=["str", "pathlib", "pathlike", "bytes", "pil"])
def test_load_image_forms(png, source):
    image = load_image(source(png))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), IMAGE)


@pytest.mark.parametrize("src, message", [
    (None, r"^<NoneType>: not an image source \(a path, the bytes of an image file or a PIL image\)$"),
    (IMAGE, r"^<ndarray>: not an image source"),
    (bytearray(b"\x89PNG"), r"^<bytearray>: not an image source"),
], ids=["none", "numpy", "bytearray"])
def test_load_image_refuses_other_types(src, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(src)


def test_load_images_forms(png):
    want = [(0, IMAGE), (1, IMAGE)]
    for sources in ([png, str(png)], (png, str(png)), (p for p in [png, str(png)])):
        good, skipped = load_images(sources)
        assert skipped == [] and [(i, np.asarray(im).tolist()) for i, im in good] == [(i, a.tolist()) for i, a in want]
    good, skipped = load_images([None, png])  # a bad item is skipped with its reason, not raised
    assert [i for i, _ in good] == [1] and skipped == [
        "<NoneType>: not an image source (a path, the bytes of an image file or a PIL image)"]
    assert load_images([]) == ([], [])


@pytest.mark.parametrize("call, message", [
    (lambda p: load_images(str(p)), r"^sources must be a list of image sources, got a single str: pass \[source\]$"),
    (lambda p: load_images(p), r"^sources must be a list of image sources, got a single PosixPath"),
    (lambda p: load_images(None), r"^sources must be a list of image sources, got NoneType$"),
    (lambda p: load_image(p, max_pixels="10"), r"^max_pixels='10' must be a positive integer$"),
    (lambda p: load_images([p], max_pixels=0), r"^max_pixels=0 must be a positive integer$"),
], ids=["images-str", "images-path", "images-none", "max-pixels-str", "max-pixels-zero"])
def test_image_loaders_refuse(png, call, message):
    with pytest.raises(ValueError, match=message):
        call(png)


def test_process_anyres_grids_tuple_or_list():
    image = Image.fromarray(IMAGE)
    a = process_anyres(image, ("1x1", "2x1"), base=28)
    b = process_anyres(image, ["1x1", "2x1"], base=28)
    assert a.grid == b.grid == (2, 1) and a.pixels.shape == (3, 28, 28, 3)
    np.testing.assert_array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize("args, message", [
    (dict(image=IMAGE), r"^image must be an RGB PIL image \(load_image\), got ndarray$"),
    (dict(image=Image.fromarray(IMAGE).convert("L")), r"^process_anyres needs an RGB image, got mode 'L'"),
    (dict(image=Image.new("RGB", (0, 10))), r"^image has zero size 0x10$"),
    (dict(grids="2x2"), r"^grids must be a sequence of 'AxB' strings, got the single string '2x2': pass \('2x2',\)$"),
    (dict(grids=[]), r"^grids is empty: no resolution grids given$"),
    (dict(grids=[(2, 2)]), r"^resolution grid \(2, 2\) is not of the form 'AxB'$"),
    (dict(base=0), r"^base=0 must be a positive integer \(the tile side in pixels\)$"),
    (dict(base=28.0), r"^base=28.0 must be a positive integer"),
], ids=["numpy", "mode-l", "zero-size", "grids-str", "grids-empty", "grid-tuple", "base-zero", "base-float"])
def test_process_anyres_refuses(args, message):
    args = {**dict(image=Image.fromarray(IMAGE), grids=("1x1",), base=28), **args}
    with pytest.raises(ValueError, match=message):
        process_anyres(args.pop("image"), **args)


@pytest.fixture(scope="module")
def encoder(vit):
    return ViewEncoder(vit)


@pytest.fixture(scope="module")
def encoded(encoder):
    return np.asarray(encoder(VIEWS))


@pytest.mark.parametrize("views", [jnp.asarray, list], ids=["jax", "list-of-views"])
def test_view_encoder_forms(encoder, encoded, views):
    np.testing.assert_array_equal(np.asarray(encoder(views(VIEWS))), encoded)


def test_view_encoder_bfloat16_views_are_computed_in_float32(encoder):
    views = VIEWS.astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(encoder(views)), np.asarray(encoder(views.astype(np.float32))))


@pytest.mark.parametrize("views, message", [
    (VIEWS[0], r"^views has shape \(56, 56, 3\)" + _VIEWS_ERROR),
    (np.concatenate([VIEWS, VIEWS[..., :1]], axis=-1), r"^views has shape \(2, 56, 56, 4\)" + _VIEWS_ERROR),
    (VIEWS.transpose(0, 3, 1, 2), r"^views has shape \(2, 3, 56, 56\)" + _VIEWS_ERROR),
    (VIEWS[:, :, :42], r"^views has shape \(2, 56, 42, 3\)" + _VIEWS_ERROR),
    (VIEWS[:, :50, :50], r"^views has shape \(2, 50, 50, 3\)" + _VIEWS_ERROR),
    (VIEWS[:0], r"^views has shape \(0, 56, 56, 3\)" + _VIEWS_ERROR),
    (np.zeros(VIEWS.shape, np.uint8), r"^views has dtype uint8; the ViT takes CLIP-normalised float views"),
    (nan_at(VIEWS), r"^views holds 1 NaN and 0 infinite values$"),
], ids=["unbatched", "four-channels", "nchw", "not-square", "side-not-patches", "empty", "uint8", "nan"])
def test_view_encoder_refuses_before_tracing(encoder, monkeypatch, views, message):
    monkeypatch.setattr("seedx_jax.vision.encode._encode", reached("the ViT program"))
    with pytest.raises(ValueError, match=message):
        encoder(views)


# -- load_model and the weight loaders ------------------------------------------------------------

def _leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


def _assert_same_state(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_load_model_paths_str_pathlib_or_pathlike(vit, tmp_path):
    save_model(str(tmp_path / "vit"), vit)
    for path in (str(tmp_path / "vit"), tmp_path / "vit", UserPath(tmp_path / "vit")):
        _assert_same_state(load_model(path, "vit"), vit)


def released(model, table) -> list[tuple[str, np.ndarray]]:
    """`model`'s variables under the release key names: the exporter runs the load tables backwards."""
    return list(_Exporter(model, table, {}, None).tensors(lambda key: True))


TENSOR_FORMS = {"pairs": list, "mapping": dict, "generator": lambda t: (kv for kv in t),
                "tensor-source": ArraySource}


@pytest.mark.parametrize("form", TENSOR_FORMS)
def test_hf_llama_and_qwen_vit_tensor_forms(vit, form):
    llama = LlamaForCausalLM(LlamaConfig.preset("llama_tiny"), rngs=nnx.Rngs(1))
    tensors = released(llama, LLAMA_HF_RULES)
    load_hf_llama(zeroed(llama), TENSOR_FORMS[form](tensors), strict=True)
    _assert_same_state(llama, LlamaForCausalLM(llama.config, rngs=nnx.Rngs(1)))
    target = zeroed(nnx.clone(vit))
    load_qwen_vit(target, TENSOR_FORMS[form](released(vit, vit_rules(vit.config.heads))), strict=True)
    _assert_same_state(target, vit)


def test_load_detokenizer_forms(detok):
    tensors = released(detok, DETOKENIZER_RULES)
    part = {p: [(k[len(p):], v) for k, v in tensors if k.startswith(p)] for p in ("unet.", "vae.")}
    checkpoint = [(k, v) for k, v in tensors if k.startswith("resampler.")]
    for unet, vae, ckpt in ((part["unet."], part["vae."], checkpoint),
                            (dict(part["unet."]), (kv for kv in part["vae."]), dict(checkpoint)),
                            (None, None, dict(tensors))):  # one checkpoint holding every key
        target = zeroed(nnx.clone(detok))
        load_detokenizer(target, unet, vae, ckpt)
        _assert_same_state(target, detok)
    target = zeroed(nnx.clone(detok.resampler))
    load_resampler_xl(target, dict(checkpoint), strict=True)  # a mapping, as load_weights takes
    _assert_same_state(target, detok.resampler)


@pytest.mark.parametrize("call, message", [
    (lambda m: load_detokenizer(m["vit"], [], [], []), r"^model must be a Detokenizer, got QwenViT$"),
    (lambda m: load_detokenizer(m["detok"], "unet.safetensors", [], []),
     r"^sdxl_unet is a str; open a file with seedx_jax.sources.open_tensors$"),
    (lambda m: load_detokenizer(m["detok"], [], pathlib.Path("vae"), []), r"^sdxl_vae is a PosixPath; open a file"),
    (lambda m: load_detokenizer(m["detok"], [], [], None),
     r"^checkpoint must be a mapping or \(key, array\) pairs, got NoneType$"),
    (lambda m: load_detokenizer(m["detok"], [], [], [("resampler.latents", np.zeros(1), 1)]),
     r"^checkpoint must be a mapping or \(key, array\) pairs, got an item \(str, ndarray, int\)$"),
    (lambda m: load_detokenizer(m["detok"], [], [], ["resampler.latents"]),
     r"^checkpoint must be .* pairs, got an item str$"),
    (lambda m: load_detokenizer(m["detok"], [], [], {"resampler.latents": [[0.0]]}),
     r"^checkpoint must be .* pairs, got an item \(str, list\)$"),
    (lambda m: load_detokenizer(m["detok"], [], [], {3: np.zeros(1)}),
     r"^checkpoint must be .*, got an item \(int, ndarray\)$"),
    (lambda m: load_hf_llama(m["vit"], []), r"^model must be a LlamaForCausalLM, got QwenViT$"),
    (lambda m: load_qwen_vit(m["detok"], []), r"^model must be a QwenViT, got Detokenizer$"),
    (lambda m: load_qwen_vit(m["vit"], 3), r"^tensors must be a mapping or \(key, array\) pairs, got int$"),
    (lambda m: load_weights(m["vit"], "model.safetensors", dense_rules("a", "b")), r"^tensors is a str; open a file"),
], ids=["detok-model", "detok-unet-str", "detok-vae-path", "detok-checkpoint-none", "detok-triple", "detok-key-only",
        "detok-list-value", "detok-int-key", "llama-model", "vit-model", "vit-int", "weights-str"])
def test_loaders_refuse(detok, vit, call, message):
    with pytest.raises(ValueError, match=message):
        call({"detok": detok, "vit": vit})
