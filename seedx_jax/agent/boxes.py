"""Bounding boxes as SEED-X location tokens (docs/tokenizer.md#bounding-boxes).

A box is `<box_start><loc-X><loc-Y><loc-W><loc-H><box_end>`: centre and size, each an integer bin
0..223 in units of 1/224 of the ORIGINAL image width (X, W) or height (Y, H).
"""
from __future__ import annotations

import math
import re
from typing import Sequence

from seedx_jax import tokens as T

Box = tuple[int, int, int, int]  # pixel corners (x0, y0, x1, y1)

_BOX_RE = re.compile(re.escape(T.BOX_START) + "(.*?)" + re.escape(T.BOX_END), re.S)
_LOC_RE = re.compile(r"<loc-(\d+)>")


def _to_bin(value: float, size: int, rounding: str) -> int:
    # How the grounding targets were quantised is not in the released code; floor (default) or round, clamped.
    scaled = value / size * T.NUM_LOC_BINS
    b = math.floor(scaled) if rounding == "floor" else round(scaled)
    return min(max(int(b), 0), T.NUM_LOC_BINS - 1)


def box_to_bins(box: Sequence[float], image_size: tuple[int, int], *, rounding: str = "floor") -> tuple[int, ...]:
    """Pixel corners (x0, y0, x1, y1) of an image (width, height) -> bins (X, Y, W, H)."""
    if rounding not in ("floor", "round"):
        raise ValueError(f"rounding={rounding!r} must be 'floor' or 'round'")
    width, height = image_size
    x0, y0, x1, y1 = box
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {tuple(box)} is not (x0, y0, x1, y1) inside a {width}x{height} image")
    return (_to_bin((x0 + x1) / 2, width, rounding), _to_bin((y0 + y1) / 2, height, rounding),
            _to_bin(x1 - x0, width, rounding), _to_bin(y1 - y0, height, rounding))


def box_text(box: Sequence[float], image_size: tuple[int, int], *, rounding: str = "floor") -> str:
    locs = "".join(T.loc_token(b) for b in box_to_bins(box, image_size, rounding=rounding))
    return T.BOX_START + locs + T.BOX_END


def bins_to_box(bins: Sequence[int], image_size: tuple[int, int]) -> Box:
    """(X, Y, W, H) bins -> pixel corners as the official `visualize_bbox` (int() truncation)."""
    width, height = image_size
    xc, yc = bins[0] / T.NUM_LOC_BINS * width, bins[1] / T.NUM_LOC_BINS * height
    w, h = bins[2] / T.NUM_LOC_BINS * width, bins[3] / T.NUM_LOC_BINS * height
    return int(xc - w / 2), int(yc - h / 2), int(xc + w / 2), int(yc + h / 2)


def parse_boxes(text: str, image_size: tuple[int, int], *, opened: bool = False) -> list[Box]:
    """Every well-formed box in generated `text`; `opened`: the prompt already ended in `<box_start>`
    (base SEED-X grounding), so the first box starts at the beginning of `text`. Spans without exactly
    four valid `<loc-k>` are skipped."""
    if opened:
        text = T.BOX_START + text
    boxes = []
    for span in _BOX_RE.findall(text):
        bins = [int(v) for v in _LOC_RE.findall(span)]
        if len(bins) == 4 and all(b < T.NUM_LOC_BINS for b in bins):
            boxes.append(bins_to_box(bins, image_size))
    return boxes
