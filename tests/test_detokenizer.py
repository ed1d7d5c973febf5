"""De-tokenizer end to end vs PyTorch: ResamplerXLV2 statement -> diffusers StableDiffusionXLPipeline
(U-Net, Euler, VAE decode), SAME random weights loaded through `load_detokenizer` from the release
key layout (SDXL `unet/`, `vae/` state dicts + a checkpoint with `resampler.*` and `unet.*` keys).

Tolerance: 1e-3 relative on the [0, 1] images after 4 guided steps (issue 4's bound on latents;
the tiny VAE decode is within 1e-4 on its own, test_vae.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
from diffusers import UNet2DConditionModel as TorchUNet
from flax import nnx

from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig, to_uint8
from seedx_jax.detokenizer.params import load_detokenizer
from seedx_jax.diffusion.sampling import SamplerConfig
from parity import max_rel_diff, randomize_
from test_sampling import SDXL_SCHEDULER
from test_unet import diffusers_kwargs
from torch_detokenizer import TorchResamplerXLV2

CFG = DetokenizerConfig.preset("tiny")
H, W = 32, 24  # pixels: multiples of 2 (VAE) x 4 (U-Net)


def torch_parts(cfg: DetokenizerConfig, seed: int):
    torch.manual_seed(seed)
    r, v = cfg.resampler, cfg.vae
    resampler = randomize_(TorchResamplerXLV2(r.dim, r.depth, r.dim_head, r.heads, r.num_queries, r.embedding_dim,
                                              r.output1_dim, r.output2_dim, r.ff_mult), seed)
    unet = randomize_(TorchUNet(**diffusers_kwargs(cfg.unet)), seed)
    vae = randomize_(TorchAutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * len(v.block_out_channels),
        up_block_types=("UpDecoderBlock2D",) * len(v.block_out_channels), block_out_channels=v.block_out_channels,
        layers_per_block=v.layers_per_block, norm_num_groups=v.norm_num_groups, scaling_factor=v.scaling_factor), seed)
    return resampler, unet, vae


def load_ours(cfg: DetokenizerConfig, resampler, unet, vae) -> Detokenizer:
    ours = Detokenizer(cfg, rngs=nnx.Rngs(0))
    unet_state = {k: t.numpy() for k, t in unet.state_dict().items()}
    # the release checkpoint: resampler + some U-Net tensors that override the SDXL base ones
    checkpoint = [("resampler." + k, t.detach().numpy()) for k, t in resampler.state_dict().items()]
    overridden = [k for k in unet_state if "attn2.to_k" in k or k.startswith("conv_in.")]
    checkpoint += [("unet." + k, unet_state[k]) for k in overridden]
    base = dict(unet_state)
    for k in overridden:  # the SDXL base file holds other values (and a 4-channel conv_in) for these
        base[k] = np.zeros_like(base[k])[:, :4] if k == "conv_in.weight" else np.zeros_like(base[k])
    load_detokenizer(ours, base.items(), ((k, t.numpy()) for k, t in vae.state_dict().items()), checkpoint)
    return ours


@pytest.fixture(scope="module")
def stage1():
    parts = torch_parts(CFG, 0)
    return parts, load_ours(CFG, *parts)


def test_stage1_generate_matches_torch(stage1):
    (resampler, unet, vae), ours = stage1
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 6, CFG.resampler.embedding_dim)).astype(np.float32)
    negative = rng.normal(size=(1, 6, CFG.resampler.embedding_dim)).astype(np.float32)
    noise = rng.normal(size=(1, H // 2, W // 2, 4)).astype(np.float32)
    with torch.no_grad():
        embeds, pooled = resampler(torch.tensor(np.concatenate([features, negative])))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                         tokenizer_2=None, unet=unet,
                                         scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER))
        want = pipe(prompt_embeds=embeds[:1], pooled_prompt_embeds=pooled[:1], negative_prompt_embeds=embeds[1:],
                    negative_pooled_prompt_embeds=pooled[1:], height=H, width=W, num_inference_steps=4,
                    guidance_scale=7.5, latents=torch.tensor(noise).permute(0, 3, 1, 2),
                    output_type="pt").images.permute(0, 2, 3, 1).numpy()
    images = ours.generate(jnp.asarray(features), jnp.asarray(negative), height=H, width=W,
                           sampler=SamplerConfig(num_steps=4), noise=jnp.asarray(noise))
    got = np.clip(np.asarray(images) / 2 + 0.5, 0, 1)
    assert got.shape == want.shape == (1, H, W, 3)
    assert max_rel_diff(got, want) <= 1e-3
    pixels = to_uint8(images)
    assert pixels.dtype == np.uint8 and np.abs(pixels.astype(int) - np.round(want * 255)).max() <= 1


def test_stage2_needs_the_8_channel_conv_in_from_the_checkpoint():
    cfg = DetokenizerConfig.preset("tiny_edit")
    resampler, unet, vae = torch_parts(cfg, 1)
    ours = load_ours(cfg, resampler, unet, vae)
    np.testing.assert_array_equal(np.asarray(ours.unet.conv_in.kernel[...]),
                                  unet.conv_in.weight.detach().numpy().transpose(2, 3, 1, 0))
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.normal(size=(2, 6, cfg.resampler.embedding_dim)).astype(np.float32))
    negative = jnp.asarray(rng.normal(size=(1, 6, cfg.resampler.embedding_dim)).astype(np.float32))
    images = jnp.asarray(rng.uniform(size=(2, H, W, 3)).astype(np.float32))
    out = ours.generate(features, negative, height=H, width=W, sampler=SamplerConfig(num_steps=2),
                        condition_images=images)
    assert out.shape == (2, H, W, 3) and bool(jnp.isfinite(out).all())


@pytest.mark.parametrize("kwargs, message", [
    (dict(height=30), r"height=30 must be a positive multiple of 8"),
    (dict(width=0), r"width=0 must be a positive multiple of 8"),
    (dict(features=np.zeros((1, 6, 15), np.float32)), r"features must be \[N, L, 16\] ViT-space features"),
    (dict(negative=np.zeros((2, 6, 16), np.float32), features=np.zeros((3, 6, 16), np.float32)),
     r"negative batch 2 must be 1 or match features batch 3"),
    (dict(condition_images=np.zeros((1, H, W, 3), np.float32)), r"condition_images need a stage-2 de-tokenizer"),
])
def test_bad_input_fails_before_compiling(stage1, kwargs, message):
    _, ours = stage1
    args = dict(features=np.zeros((1, 6, 16), np.float32), negative=np.zeros((1, 6, 16), np.float32), height=H,
                width=W)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ours.generate(jnp.asarray(args.pop("features")), jnp.asarray(args.pop("negative")),
                      **{k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()})


def test_stage2_checkpoint_without_conv_in_is_refused():
    cfg = DetokenizerConfig.preset("tiny_edit")
    resampler, unet, vae = torch_parts(cfg, 2)
    ours = Detokenizer(cfg, rngs=nnx.Rngs(0))
    base = {k: t.numpy() for k, t in unet.state_dict().items()}
    base["conv_in.weight"] = base["conv_in.weight"][:, :4]  # SDXL base: 4 channels
    checkpoint = [("resampler." + k, t.detach().numpy()) for k, t in resampler.state_dict().items()]
    with pytest.raises(ValueError, match=r"shape mismatch: unet.conv_in.weight"):
        load_detokenizer(ours, base.items(), ((k, t.numpy()) for k, t in vae.state_dict().items()), checkpoint)


def test_reconstruct_from_vit_features():
    from seedx_jax.detokenizer.model import negative_features
    from seedx_jax.vision import QwenViT, VisionConfig
    from seedx_jax.vision.features import vit_down

    vit_cfg = VisionConfig.preset("qwen_vit_tiny", image_size=56)
    vit = QwenViT(vit_cfg, rngs=nnx.Rngs(3))
    neg256, neg64 = negative_features(vit, pooled=False), negative_features(vit, pooled=True)
    assert neg256.shape == (1, 256, vit_cfg.output_dim) and neg64.shape == (1, 64, vit_cfg.output_dim)
    np.testing.assert_allclose(np.asarray(neg64), np.asarray(vit_down(neg256)), rtol=1e-6, atol=1e-6)
    cfg = CFG.replace(resampler=CFG.resampler.replace(embedding_dim=vit_cfg.output_dim))
    model = Detokenizer(cfg, rngs=nnx.Rngs(0))
    views = jax.random.normal(jax.random.key(0), (2, 56, 56, 3))
    out = model.reconstruct(vit, views, height=H, width=W, sampler=SamplerConfig(num_steps=1))
    assert out.shape == (2, H, W, 3) and bool(jnp.isfinite(out).all())
