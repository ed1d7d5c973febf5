"""The converter builds its configs from the release itself: a tree that is not SEED-X-sized converts
with no `--config` (sizes from the tensor shapes, the LLM from `llm/config.json`, the U-Net and VAE
from the SDXL folder's diffusers configs; what shapes do not give - head counts, the ViT's input
size - is SEED-X's, as in the fixture below), an agent JSON without `llm` takes the LLM from `--llm`,
and a config that cannot be built fails in one line before anything is written.

Tolerance and helpers: tests/test_convert.py.
"""
import json
import os
import shutil
import time

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seedx_jax.checkpoint import load_model, read_manifest
from seedx_jax.cli import main as seedx_jax_command
from seedx_jax.convert.artefacts import ArtefactError, detokenizer_artefact
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.diffusion.unet import UNetConfig
from seedx_jax.diffusion.vae import VAEConfig
from seedx_jax.pipelines import SeedX
from parity import max_rel_diff
from release_fixture import SEEDX_HEADS, write_tiny_release
from test_agent import batch, reference
from test_convert import TOL, release, run, vit_features  # noqa: F401 (release)
from test_convert import AGENT as TINY_AGENT
from test_convert import agent_logits as tiny_logits
from test_unet import inputs as unet_inputs
from test_unet import reference as unet_reference

# Tiny sizes with SEED-X's head counts and ViT input size (the fields no tensor shape gives).
VIT, AGENT = SEEDX_HEADS["vit"], SEEDX_HEADS["agent"]
RESAMPLER = SEEDX_HEADS["detokenizer"].resampler
DETOK = {stage: SEEDX_HEADS["detokenizer"].replace(unet=SEEDX_HEADS["detokenizer"].unet.replace(in_channels=4 * stage))
         for stage in (1, 2)}

# stable-diffusion-xl-base-1.0's unet/config.json and vae/config.json as published
SDXL_UNET = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0.dev0", "act_fn": "silu",
    "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "center_input_sample": False,
    "class_embed_type": None, "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "cross_attention_dim": 2048, "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1,
    "dual_cross_attention": False, "encoder_hid_dim": None, "encoder_hid_dim_type": None, "flip_sin_to_cos": True,
    "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05,
    "norm_num_groups": 32, "num_attention_heads": None, "num_class_embeds": None, "only_cross_attention": False,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False, "resnet_time_scale_shift": "default", "sample_size": 128,
    "time_cond_proj_dim": None, "time_embedding_act_fn": None, "time_embedding_dim": None,
    "time_embedding_type": "positional", "timestep_post_act": None, "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": None,
    "use_linear_projection": True}
SDXL_VAE = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.20.0.dev0", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4, "force_upcast": True,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 1024, "scaling_factor": 0.13025, "up_block_types": ["UpDecoderBlock2D"] * 4}


@pytest.fixture(scope="module")
def sized_release(tmp_path_factory):
    """A release tree (docs/release_tree.md) of the sizes above; no config file describes the ViT, the
    agent's resamplers or the de-tokenizer's resampler."""
    return write_tiny_release(tmp_path_factory.mktemp("sized_release"), **SEEDX_HEADS)


def agent_logits(model, cfg=AGENT, seed=0):
    b = batch(cfg, seed)
    if isinstance(model, torch.nn.Module):
        return reference(model, b)[0]
    return np.asarray(model(**{k: jnp.asarray(v) for k, v in b.items()}).logits)


def test_release_converts_without_any_config_and_matches_torch(sized_release, tmp_path):
    out = tmp_path / "seedx"
    assert seedx_jax_command(["convert", "release", str(sized_release["root"]), "--out", str(out), "--quiet"]) == 0
    for name, stage in (("seed_x_i", 1), ("seed_x_edit", 2)):
        pipe = SeedX.load(str(out / name))
        assert (pipe.configs.vit, pipe.configs.agent, pipe.configs.detokenizer) == (VIT, AGENT, DETOK[stage])
    # the outputs of one model of each kind (the other's weights map by the same tables)
    assert max_rel_diff(agent_logits(pipe.agent), agent_logits(sized_release["agents"]["seed_x_edit"])) <= TOL
    assert max_rel_diff(vit_features(pipe.vit), vit_features(sized_release["vit"])) <= TOL
    resampler, unet = sized_release["resampler"], sized_release["unets"][2]
    feats = np.random.default_rng(0).normal(size=(2, 6, RESAMPLER.embedding_dim)).astype(np.float32)
    with torch.no_grad():
        want = resampler(torch.tensor(feats))
    for got, ref in zip(pipe.detokenizer.resampler(jnp.asarray(feats)), want):
        assert max_rel_diff(got, ref.numpy()) <= TOL
    x = unet_inputs(pipe.detokenizer.config.unet)
    assert max_rel_diff(pipe.detokenizer.unet(**{k: jnp.asarray(v) for k, v in x.items()}),
                        unet_reference(unet, x)) <= TOL
    z = np.random.default_rng(1).normal(size=(1, 8, 6, 4)).astype(np.float32)
    with torch.no_grad():
        want = sized_release["vae"].decode(torch.tensor(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1).numpy()
    assert max_rel_diff(pipe.detokenizer.vae.decode(jnp.asarray(z)), want) <= TOL

    root = sized_release["root"]
    origin = read_manifest(str(out / "detokenizer_stage2"))["source"]["options"]["config_from"]
    ckpt = root / "seed_detokenizer" / "second_stage" / "pytorch_model.bin"
    assert list(origin) == ["preset stage1", f"{root}/stable-diffusion-xl-base-1.0/unet/config.json",
                            f"{root}/stable-diffusion-xl-base-1.0/vae/config.json", f"tensor shapes of {ckpt}",
                            f"unet.conv_in.weight of {ckpt}"]
    assert "resampler.dim_head" in origin[f"tensor shapes of {ckpt}"] and "resampler.heads" not in str(origin)
    origin = read_manifest(str(out / "seed_x_i" / "agent"))["source"]["options"]["config_from"]
    assert "llm.vocab_size" in origin[f"{root}/seed_x_i/llm/config.json"]
    assert origin[f"tensor shapes of {root}/seed_x_i/agent/pytorch_model.bin"] == [
        f"{part}.{field}" for part in ("input_resampler", "output_resampler") for field in ("embed_dim", "grid_size",
                                                                                            "kv_dim")]


def test_agent_json_without_llm_takes_it_from_the_llm_folder(release, tmp_path):
    """test_convert's tiny agent: its head counts are not SEED-X's, so a JSON gives them; the sizes come
    from the tensor shapes and the LLM from --llm's config.json."""
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"input_resampler": {"num_heads": 4}, "output_resampler": {"num_heads": 2}}))
    root = release["root"] / "seed_x_i"
    assert run("agent", root / "agent" / "pytorch_model.bin", "--llm", root / "llm", "--out", tmp_path / "agent",
               "--config", heads, "--strict") == 0
    ours = load_model(str(tmp_path / "agent"), "agent")
    assert ours.config == TINY_AGENT
    assert max_rel_diff(tiny_logits(ours), tiny_logits(release["agents"]["seed_x_i"])) <= TOL


def test_a_json_that_does_not_fit_fails_the_release_before_anything_is_written(sized_release, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input_resampler": {"embed_dim": 96}}))
    out = tmp_path / "out" / "seedx"
    start = time.monotonic()
    assert seedx_jax_command(["convert", "release", str(sized_release["root"]), "--out", str(out), "--quiet",
                              "--config", f"agent={bad}"]) == 2
    assert time.monotonic() - start < 30
    assert capsys.readouterr().err.strip().splitlines() == [
        f"seedx-jax convert release: error: seed_x_i/agent: --config {bad}: AgentConfig: input_resampler.embed_dim=96 "
        "and output_resampler.kv_dim=128 must equal llm.hidden_size=128"]
    assert not os.path.exists(tmp_path / "out")


def test_sdxl_diffusers_configs_are_the_sdxl_presets():
    assert UNetConfig.from_diffusers(SDXL_UNET) == UNetConfig.preset("sdxl")
    assert VAEConfig.from_diffusers(SDXL_VAE) == VAEConfig.preset("sdxl")
    assert UNetConfig.from_diffusers({**SDXL_UNET, "in_channels": 8}, remat="full") == UNetConfig.preset(
        "sdxl_edit", remat="full")


@pytest.mark.parametrize("cls, base, change, message", [
    (UNetConfig, SDXL_UNET, {"use_linear_projection": False},
     "diffusers U-Net option use_linear_projection=False is not supported (only True)"),
    (UNetConfig, SDXL_UNET, {"addition_embed_type": None},
     "diffusers U-Net option addition_embed_type=None is not supported (only 'text_time')"),
    (UNetConfig, SDXL_UNET, {"upcast_attention": True},
     "diffusers U-Net option upcast_attention=True is not supported (only None or False)"),
    (UNetConfig, SDXL_UNET, {"cross_attention_dim": [2048, 2048, 2048]},
     "diffusers U-Net option cross_attention_dim=[2048, 2048, 2048] is not supported (only one int)"),
    (UNetConfig, SDXL_UNET, {"transformer_layers_per_block": [[1], [2, 2], [10] * 10]},
     "diffusers U-Net option transformer_layers_per_block=[[1], [2, 2], [10, 10, 10, 10, 10, 10, 10, 10, 10, 10]] "
     "is not supported (an int, or one int per level)"),
    (UNetConfig, SDXL_UNET, {"new_option": 1}, "diffusers U-Net option new_option=1 is not one seedx_jax knows"),
    (UNetConfig, {k: v for k, v in SDXL_UNET.items() if k != "use_linear_projection"}, {},
     "diffusers U-Net option use_linear_projection=False is not supported (only True)"),  # diffusers' default
    (VAEConfig, SDXL_VAE, {"shift_factor": 0.1159},
     "diffusers VAE option shift_factor=0.1159 is not supported (only None)"),
    (VAEConfig, SDXL_VAE, {"latents_mean": [0.0] * 4}, "diffusers VAE option latents_mean=[0.0, 0.0, 0.0, 0.0] is "
     "not supported (only None)"),
    (VAEConfig, SDXL_VAE, {"up_block_types": ["UpDecoderBlock2D"] * 3},
     "diffusers VAE option up_block_types=['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'] is not "
     "supported (only UpDecoderBlock2D, one per block_out_channels entry)"),
])
def test_diffusers_options_we_do_not_implement_are_refused(cls, base, change, message):
    with pytest.raises(ValueError) as err:
        cls.from_diffusers({**base, **change})
    assert str(err.value) == message


def test_the_converter_names_the_diffusers_file_and_option(sized_release, tmp_path):
    sdxl = tmp_path / "sdxl"
    shutil.copytree(sized_release["root"] / "stable-diffusion-xl-base-1.0", sdxl)
    config = json.loads((sdxl / "vae" / "config.json").read_text())
    (sdxl / "vae" / "config.json").write_text(json.dumps({**config, "use_post_quant_conv": False}))
    ckpt = sized_release["root"] / "seed_detokenizer" / "first_stage" / "pytorch_model.bin"
    with pytest.raises(ArtefactError) as err:
        detokenizer_artefact(str(ckpt), str(sdxl))
    assert str(err.value) == (f"{sdxl}/vae/config.json: diffusers VAE option use_post_quant_conv=False is not "
                              "supported (only True)")
    sdxl = sized_release["root"] / "stable-diffusion-xl-base-1.0"  # an explicit preset wins over the files' sizes
    assert detokenizer_artefact(str(ckpt), str(sdxl), config="tiny").config == DetokenizerConfig.preset("tiny")
