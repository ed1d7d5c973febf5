"""AutoencoderKL vs diffusers on a tiny SDXL-style config, SAME random weights in the diffusers layout.

Tolerance: max |diff| <= 1e-4 x max |reference| for the posterior mean, logvar and the decoded image.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from flax import nnx

from seedx_jax.diffusion.params import load_vae
from seedx_jax.diffusion.vae import AutoencoderKL, VAEConfig
from parity import max_rel_diff, randomize_

CFG = VAEConfig.preset("tiny")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ref = TorchAutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=CFG.block_out_channels,
                             layers_per_block=CFG.layers_per_block, latent_channels=4,
                             norm_num_groups=CFG.norm_num_groups, sample_size=32)
    ref = randomize_(ref)  # non-trivial norms and biases (defaults are 1 / 0)
    ours = AutoencoderKL(CFG, rngs=nnx.Rngs(0))
    state = [("vae." + k, v.numpy()) for k, v in ref.state_dict().items()]
    assert len(load_vae(ours, state, strict=True).loaded) == len(state)
    return ref, ours


def test_encode_matches_diffusers(pair):
    ref, ours = pair
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 24, 3)).astype(np.float32)
    with torch.no_grad():
        dist = ref.encode(torch.tensor(x).permute(0, 3, 1, 2)).latent_dist
    mean, logvar = ours.encode(jnp.asarray(x))
    assert mean.shape == (2, 16, 12, 4)
    assert max_rel_diff(mean, dist.mean.permute(0, 2, 3, 1).numpy()) <= 1e-4
    assert max_rel_diff(logvar, dist.logvar.permute(0, 2, 3, 1).numpy()) <= 1e-4
    sample = ours.sample(mean, logvar, jax.random.key(0))
    assert sample.shape == mean.shape and float(jnp.abs(sample - mean).max()) > 0


def test_decode_matches_diffusers(pair):
    ref, ours = pair
    z = np.random.default_rng(1).normal(size=(2, 8, 10, 4)).astype(np.float32)
    with torch.no_grad():
        want = ref.decode(torch.tensor(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1).numpy()
    got = ours.decode(jnp.asarray(z))
    assert got.shape == (2, 16, 20, 3)
    assert max_rel_diff(got, want) <= 1e-4


def test_tiled_decode_matches_diffusers(pair):
    ref, ours = pair
    z = np.random.default_rng(2).normal(size=(1, 14, 20, 4)).astype(np.float32)  # ragged last tiles
    ref.tile_sample_min_size, ref.tile_latent_min_size = 16, 8
    with torch.no_grad():
        want = ref.tiled_decode(torch.tensor(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1).numpy()
    got = ours.decode_tiled(jnp.asarray(z), tile_latent_size=8)
    assert got.shape == want.shape == (1, 28, 40, 3)
    assert max_rel_diff(got, want) <= 1e-4
    assert max_rel_diff(ours.decode(jnp.asarray(z)), want) > 1e-3  # tiling is visible: the test can fail
    with pytest.raises(ValueError, match=r"overlap=1.0 in \[0, 1\)"):
        ours.decode_tiled(jnp.asarray(z), overlap=1.0)


def test_sdxl_size_and_bad_input():
    full = nnx.eval_shape(lambda: AutoencoderKL(VAEConfig.preset("sdxl"), rngs=nnx.Rngs(0)))
    count = sum(x.size for x in jax.tree.leaves(nnx.state(full)))
    assert count == 83_653_863  # diffusers' SDXL vae: ~8.4e7
    model = AutoencoderKL(CFG, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"images height/width \(31, 32\) must be multiples of 2"):
        model.encode(jnp.zeros((1, 31, 32, 3)))
    with pytest.raises(ValueError, match=r"latents must be \[N, H, W, 4\] \(NHWC\), got shape \(1, 4, 8, 8\)"):
        model.decode(jnp.zeros((1, 4, 8, 8)))
