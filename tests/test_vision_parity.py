"""fp32 parity of the bicubic table resize, the Resampler and the Qwen ViT with a PyTorch statement.

Tolerances: bicubic 1e-6 x max |table|; features max |diff| <= 1e-4 x max |reference features|.
"""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from seedx_jax.vision import QwenViT, Resampler, ResamplerConfig, VisionConfig
from seedx_jax.vision.params import load_qwen_vit, load_resampler
from seedx_jax.vision.position_tables import bicubic_taps, resize_table, sincos_2d
from parity import max_rel_diff, randomize_
from torch_vision import TorchQwenViT, TorchResampler, sincos_table

TOL = 1e-4


def _numpy_state(module):
    return [(k, v.detach().numpy()) for k, v in module.state_dict().items()]


def test_bicubic_resize_equals_torch_interpolate():
    rng = np.random.default_rng(0)
    targets = [(32, 32), (8, 8), (13, 13), (1, 1), (40, 7)] + [tuple(rng.integers(1, 48, 2)) for _ in range(5)]
    for src in [(16, 16), (5, 11)]:
        table = rng.normal(size=(src[0] * src[1], 6)).astype(np.float32)
        for h, w in targets:
            grid = torch.tensor(table).reshape(1, *src, 6).permute(0, 3, 1, 2)
            want = F.interpolate(grid, size=(int(h), int(w)), mode="bicubic", align_corners=False)
            want = want.permute(0, 2, 3, 1).reshape(-1, 6).numpy()
            got = np.asarray(resize_table(jnp.asarray(table), src, (int(h), int(w))))
            assert np.abs(got - want).max() <= 1e-6 * np.abs(table).max(), (src, h, w)


def test_bicubic_sanity_values_and_sincos_halves():
    idx, weights = bicubic_taps(8, 16)
    m = np.zeros((16, 8))
    for tap in range(4):  # repeated (clamped) border taps add up
        np.add.at(m, (np.arange(16), idx[:, tap]), weights[:, tap])
    # check values of docs/architecture.md#position-table-interpolation
    np.testing.assert_allclose(m[0, :2], [1.10546875, -0.10546875], atol=1e-7)
    np.testing.assert_allclose(m[1, :3], [0.7734375, 0.26171875, -0.03515625], atol=1e-7)
    table = sincos_2d(16, 4)
    np.testing.assert_allclose(table, sincos_table(16, 4).numpy(), atol=1e-6)
    # token (row 0, col 1) differs from (0, 0) only in the first (column) half
    assert np.abs(table[1, 8:] - table[0, 8:]).max() == 0 and np.abs(table[1, :8] - table[0, :8]).max() > 0


@pytest.mark.parametrize("grid, embed, heads, kv, length, eps", [
    (2, 8, 2, 6, 16, 1e-5),   # 2x2 -> 4x4 key-position interpolation
    (2, 8, 2, 6, 4, 1e-5),    # no interpolation
    (2, 8, 2, 8, 9, 1e-6),    # kv_dim == embed_dim: identity kv_proj; odd 3x3 grid
    (3, 16, 4, 12, 49, 1e-6),
])
def test_resampler_matches_torch(grid, embed, heads, kv, length, eps):
    torch.manual_seed(0)
    ref = randomize_(TorchResampler(grid, embed, heads, kv, eps=eps))
    cfg = ResamplerConfig(grid_size=grid, embed_dim=embed, num_heads=heads, kv_dim=kv, eps=eps)
    ours = Resampler(cfg, rngs=nnx.Rngs(0))
    load_resampler(ours, [("input_resampler." + k, v) for k, v in _numpy_state(ref)],
                   prefix="input_resampler.", strict=True)
    assert (ours.kv_proj is None) == (kv == embed)
    x = np.random.default_rng(1).normal(size=(3, length, kv)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.tensor(x)).numpy()
    got = ours(jnp.asarray(x))
    assert got.shape == (3, grid * grid, embed)
    assert max_rel_diff(got, want) <= TOL


@pytest.fixture(scope="module")
def vit_pair():
    cfg = VisionConfig.preset("qwen_vit_tiny")
    torch.manual_seed(0)
    ref = randomize_(TorchQwenViT(cfg))
    state = _numpy_state(ref)
    assert len(state) == 4 + 12 * cfg.layers + 11 + 3  # docs/checkpoints.md#vit-keys
    return cfg, ref, state


@pytest.mark.parametrize("side", [112, 182, 224, 280], ids=["grid8", "grid13", "grid16", "grid20"])
@pytest.mark.parametrize("scan", [True, False], ids=["scan", "unscanned"])
def test_vit_matches_torch(vit_pair, side, scan):
    cfg, ref, state = vit_pair
    ours = QwenViT(cfg.replace(scan_layers=scan), rngs=nnx.Rngs(0))
    # as stored inside a Qwen-VL-Chat checkpoint
    report = load_qwen_vit(ours, [("transformer.visual." + k, v) for k, v in state], strict=True)
    assert len(report.loaded) == len(state)
    images = np.random.default_rng(side).normal(size=(2, side, side, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.tensor(images).permute(0, 3, 1, 2)).numpy()
    got = ours(jnp.asarray(images))
    assert got.shape == (2, 256, cfg.output_dim)
    assert max_rel_diff(got, want) <= TOL


def test_vit_bf16_compute_stays_close(vit_pair):
    cfg, ref, state = vit_pair
    ours = QwenViT(cfg.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    load_qwen_vit(ours, state, strict=True)
    images = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.tensor(images).permute(0, 3, 1, 2)).numpy()
    got = ours(jnp.asarray(images))
    assert got.dtype == jnp.bfloat16
    assert max_rel_diff(got.astype(jnp.float32), want) <= 5e-2
