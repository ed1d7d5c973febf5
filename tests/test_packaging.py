"""The runtime path never imports the PyTorch stack; the shipped config files build."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from seedx_jax import sharding
from seedx_jax.llama import LlamaConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]

RUNTIME_SCRIPT = """
import sys
import jax.numpy as jnp
from flax import nnx
from seedx_jax import losses, lora, sharding, weights
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM, generate
from PIL import Image
from seedx_jax import tokens
from seedx_jax.vision import QwenViT, VisionConfig
from seedx_jax.vision import anyres, encode, features, image_io, params
from seedx_jax.detokenizer import ResamplerXL, ResamplerXLConfig, params as detok_params
from seedx_jax.diffusion import schedulers
from seedx_jax.diffusion.vae import AutoencoderKL, VAEConfig
model = LlamaForCausalLM(LlamaConfig.preset("llama_tiny"), rngs=nnx.Rngs(0))
generate(model, jnp.ones((1, 3), jnp.int32), 2)
views = anyres.process_anyres(image_io.load_image(Image.new("RGB", (60, 40))), base=112)
encode.ViewEncoder(QwenViT(VisionConfig.preset("qwen_vit_tiny"), rngs=nnx.Rngs(0)))(views.pixels)
ResamplerXL(ResamplerXLConfig.preset("tiny"), rngs=nnx.Rngs(0))(jnp.ones((1, 4, 16)))
schedulers.euler_schedule(schedulers.NoiseScheduleConfig(), 20)
AutoencoderKL(VAEConfig.preset("tiny"), rngs=nnx.Rngs(0)).decode(jnp.zeros((1, 4, 4, 4)))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "diffusers", "peft"})
print("HEAVY", heavy)
"""


def test_runtime_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", RUNTIME_SCRIPT], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("llama*.py")), ids=lambda p: p.name)
def test_config_files_build(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT))
    config = module.get_config()
    model_cfg = LlamaConfig.from_dict(config.model.to_dict())
    assert model_cfg.lora is not None and model_cfg.lora.rank > 0
    assert sharding.resolve_axis_sizes(config.mesh.to_dict(), 8) == (1, 8, 1)
    sharding.rules_with_overrides(config.sharding_rules.to_dict())
