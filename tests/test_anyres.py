"""Any-res preprocessing against an independent statement of the rules and PIL/torch pixels."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from seedx_jax import tokens
from seedx_jax.vision.anyres import (COMPREHENSION_GRIDS, EDIT_GRIDS, candidate_resolutions, image_transform,
                                     process_anyres, select_resolution)
from seedx_jax.vision.features import patch_position_term, vit_down

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]


def reference_choice(w0, h0, grids):
    """The selection rules of `process_anyres_image`, stated with sort keys (earlier candidate wins ties)."""
    cands = [(int(a) * 448, int(b) * 448) for a, b in (g.split("x") for g in grids)]

    def fit_key(i):
        w, h = cands[i]
        s = min(w / w0, h / h0)
        effective = min(int(w0 * s) * int(h0 * s), w0 * h0)
        return (-effective, w * h - effective, i)

    def ratio_key(i):
        w, h = cands[i]
        r, r0 = h / w, h0 / w0
        return (max(r, r0) / min(r, r0), max(w * h, w0 * h0) / min(w * h, w0 * h0), i)

    sel1 = cands[min(range(len(cands)), key=fit_key)]
    sel2 = cands[min(range(len(cands)), key=ratio_key)]
    return sel2 if sel1[0] * sel1[1] > sel2[0] * sel2[1] else sel1


def torch_pixels(image: Image.Image) -> np.ndarray:
    """torchvision ToTensor + Normalize(CLIP), returned NHWC."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
    return ((x - MEAN) / STD).permute(1, 2, 0).numpy()


# (W0, H0) -> (W, H) worked out by hand (docs/architecture.md#grid-selection)
WORKED = {(448, 448): (448, 448), (640, 480): (448, 448), (300, 200): (448, 448),
          (1280, 720): (896, 448), (1920, 1080): (896, 448), (1080, 1920): (448, 896),
          (800, 600): (896, 896), (1024, 1024): (896, 896), (3000, 1000): (1344, 448),
          (1000, 3000): (448, 1344)}

SIZES = [(448, 448), (1024, 1024), (448, 1792), (1792, 448), (20, 30), (4000, 3000), (1000, 1500),
         (1280, 720), (1, 1000), (1000, 1), (447, 449), (896, 895), (3000, 1000)]


def test_worked_examples_and_reference_rule():
    cands = candidate_resolutions(COMPREHENSION_GRIDS)
    for size, want in WORKED.items():
        assert select_resolution(size, cands) == want, size
    rng = np.random.default_rng(0)
    for size in SIZES + [tuple(rng.integers(1, 5000, 2)) for _ in range(300)]:
        w0, h0 = int(size[0]), int(size[1])
        assert select_resolution((w0, h0), cands) == reference_choice(w0, h0, COMPREHENSION_GRIDS), size
        assert select_resolution((w0, h0), candidate_resolutions(EDIT_GRIDS)) == (448, 448)
    # Custom grid lists where the two selectors tie on area with different shapes: selector 1 wins.
    assert select_resolution((14, 1), candidate_resolutions(("1x2", "2x1"))) == (448, 896)
    for grids in [("1x2", "2x1"), ("2x2", "1x4", "4x1"), ("4x1", "1x4"), ("3x1", "1x3", "2x2")]:
        for size in [tuple(rng.integers(1, 4000, 2)) for _ in range(200)]:
            w0, h0 = int(size[0]), int(size[1])
            assert select_resolution((w0, h0), candidate_resolutions(grids)) == reference_choice(w0, h0, grids)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tiles_positions_and_pixels(size):
    rng = np.random.default_rng(size[0] * 7 + size[1])
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = process_anyres(image)
    width, height = reference_choice(*size, COMPREHENSION_GRIDS)
    cols, rows = width // 448, height // 448
    assert out.grid == (cols, rows) and out.num_views == cols * rows + 1
    boxes = [(c * 448, r * 448, c * 448 + 448, r * 448 + 448) for r in range(rows) for c in range(cols)]
    assert list(out.boxes) == boxes
    want_pos = [((c + 0.5) / cols, (r + 0.5) / rows) for r in range(rows) for c in range(cols)] + [(0.5, 0.5)]
    np.testing.assert_allclose(out.positions, want_pos, atol=0)
    resized = image.resize((width, height))  # PIL's default filter, as the official code
    want = [torch_pixels(resized.crop(b)) for b in boxes] + [torch_pixels(image.resize((448, 448)))]
    assert out.pixels.shape == (len(want), 448, 448, 3) and out.pixels.dtype == np.float32
    np.testing.assert_allclose(out.pixels, np.stack(want), atol=1e-5, rtol=0)


def test_image_transform_is_bilinear_resize_and_clip_normalisation():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8))
    want = torch_pixels(image.resize((448, 448), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(image_transform(image), want, atol=1e-5, rtol=0)
    zero = image_transform(Image.new("RGB", (448, 448)))  # no-op resize path
    np.testing.assert_allclose(zero[0, 0], (-MEAN / STD).flatten().numpy(), atol=1e-6)


def test_prompt_text_layout():
    text = tokens.anyres_image_text(2)
    placeholders = "".join(f"<img_{i:05d}>" for i in range(64))
    assert text == ("<patch>" + placeholders + "</patch>") * 2 + "<img>" + placeholders + "</img>"
    assert text.count("<") == 66 * 3  # 66 tokens per view


def test_vit_down_and_patch_position_term():
    feats = np.random.default_rng(2).normal(size=(2, 256, 5)).astype(np.float32)
    got = np.asarray(vit_down(jnp.asarray(feats)))
    assert got.shape == (2, 64, 5)
    np.testing.assert_allclose(got[1, 10], feats[1, 40:44].mean(0), rtol=1e-6)  # 4 consecutive tokens
    table = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32)
    pos = np.array([[0.25, 0.5], [0.5, 0.5]], np.float32)
    got = np.asarray(patch_position_term(jnp.asarray(pos), jnp.asarray(table)))
    x, y = 0.25, 0.5
    np.testing.assert_allclose(got[0], 0.5 * (x * table[0] + y * table[1] + (1 - x) * table[2] + (1 - y) * table[3]),
                               rtol=1e-6)
    np.testing.assert_allclose(got[1], table.mean(0), rtol=1e-5)  # global view: mean of the 4 rows
