"""Dynamic resolution ("any-res") preprocessing, exactly as the official code (src/inference/any_res.py).

An image is resized (PIL bicubic, aspect ratio NOT kept) to the chosen grid of base x base tiles,
cut into tiles in row-major order, and followed by a global view (the original resized to base x
base). Each view is CLIP-normalised. Arrays are NHWC float32.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image

BASE = 448
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)

# "AxB" = A * base wide, B * base tall. The order decides ties (earlier wins).
COMPREHENSION_GRIDS = ("1x1", "1x2", "1x3", "2x1", "3x1", "1x4", "4x1", "2x2")
EDIT_GRIDS = ("1x1",)


def candidate_resolutions(grids: Sequence[str], base: int = BASE) -> list[tuple[int, int]]:
    """["2x1", ...] -> [(width, height), ...] in pixels."""
    out = []
    for grid in grids:
        parts = grid.split("x") if isinstance(grid, str) else ()  # a non-string fails the unpacking
        try:
            cols, rows = (int(v) for v in parts)
        except ValueError:
            raise ValueError(f"resolution grid {grid!r} is not of the form 'AxB'") from None
        if cols < 1 or rows < 1:
            raise ValueError(f"resolution grid {grid!r} must have positive sides")
        out.append((cols * base, rows * base))
    if not out:
        raise ValueError("grids is empty: no resolution grids given")
    return out


def _select_by_fit(size, candidates):
    """Selector 1 (LLaVA-NeXT): most effective resolution, then least waste."""
    w0, h0 = size
    best, best_effective, best_wasted = None, -1, float("inf")
    for w, h in candidates:
        scale = min(w / w0, h / h0)
        effective = min(int(w0 * scale) * int(h0 * scale), w0 * h0)
        wasted = w * h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (w, h), effective, wasted
    return best


def _select_by_ratio(size, candidates):
    """Selector 2: closest aspect ratio, then closest area."""
    w0, h0 = size
    ratio0, area0 = h0 / w0, w0 * h0
    best, best_ratio, best_area = None, float("inf"), float("inf")
    for w, h in candidates:
        r = h / w
        ratio_gap = max(r, ratio0) / min(r, ratio0)
        area_gap = max(w * h, area0) / min(w * h, area0)
        if ratio_gap < best_ratio or (ratio_gap == best_ratio and area_gap < best_area):
            best, best_ratio, best_area = (w, h), ratio_gap, area_gap
    return best


def select_resolution(size: tuple[int, int], candidates: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The smaller-area choice of the two selectors; ties go to selector 1 (`process_anyres_image`)."""
    by_fit, by_ratio = _select_by_fit(size, candidates), _select_by_ratio(size, candidates)
    return by_ratio if by_fit[0] * by_fit[1] > by_ratio[0] * by_ratio[1] else by_fit


def normalize(image: Image.Image) -> np.ndarray:
    """torchvision ToTensor + Normalize(CLIP) on an RGB PIL image, as NHWC `[H, W, 3]` float32."""
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return (pixels - CLIP_MEAN) / CLIP_STD


def image_transform(image: Image.Image, size: int = BASE) -> np.ndarray:
    """The per-image transform (`qwen_448_transform`): PIL bilinear resize to size x size (if needed), normalise."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return normalize(image)


@dataclasses.dataclass(frozen=True)
class AnyResImage:
    pixels: np.ndarray  # [S + 1, base, base, 3] float32: tiles in row-major order, global view last
    positions: np.ndarray  # [S + 1, 2] float32 (x, y) tile centres in [0, 1]; global (0.5, 0.5)
    grid: tuple[int, int]  # (cols, rows)
    boxes: tuple[tuple[int, int, int, int], ...]  # tile crop boxes in the resized image

    @property
    def num_tiles(self) -> int:
        return len(self.boxes)

    @property
    def num_views(self) -> int:
        return self.pixels.shape[0]


def process_anyres(image: Image.Image, grids: Sequence[str] = COMPREHENSION_GRIDS,
                   base: int = BASE) -> AnyResImage:
    """An RGB PIL image -> its tiles + global view, positions and grid.

    grids: a sequence of "AxB" strings (`COMPREHENSION_GRIDS`, `EDIT_GRIDS`); base: the tile side in pixels.

    Raises:
      ValueError: `image` is not a non-empty RGB PIL image (`load_image` makes one), `grids` is one
        string or holds a malformed grid, or `base` is not a positive int.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be an RGB PIL image (load_image), got {type(image).__name__}")
    if image.mode != "RGB":
        raise ValueError(f"process_anyres needs an RGB image, got mode {image.mode!r} (use load_image)")
    if 0 in image.size:
        raise ValueError(f"image has zero size {image.size[0]}x{image.size[1]}")
    if isinstance(grids, str):  # iterating "2x2" would give the grids "2", "x", "2"
        raise ValueError(f"grids must be a sequence of 'AxB' strings, got the single string {grids!r}: "
                         f"pass ({grids!r},)")
    if isinstance(base, bool) or not isinstance(base, int) or base <= 0:
        raise ValueError(f"base={base!r} must be a positive integer (the tile side in pixels)")
    width, height = select_resolution(image.size, candidate_resolutions(grids, base))
    cols, rows = width // base, height // base
    resized = image.resize((width, height), Image.Resampling.BICUBIC)  # PIL's default for RGB
    boxes = tuple((c * base, r * base, (c + 1) * base, (r + 1) * base)
                  for r in range(rows) for c in range(cols))
    views = [resized.crop(box) for box in boxes]
    views.append(image.resize((base, base), Image.Resampling.BICUBIC))
    positions = [((c + 0.5) / cols, (r + 0.5) / rows) for r in range(rows) for c in range(cols)]
    positions.append((0.5, 0.5))
    return AnyResImage(pixels=np.stack([normalize(v) for v in views]),
                       positions=np.asarray(positions, np.float32), grid=(cols, rows), boxes=boxes)
