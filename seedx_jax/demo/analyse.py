"""Reads a shapes-world image back: which shapes, in which colours, where (classical image processing).

Each pixel takes the nearest palette colour (shape colours and backgrounds) within `max_distance`;
each connected region of a shape colour larger than `min_area` is an object, classified by two scale-
free features: fill (area / bounding-box area) and solidity (area / convex-hull area).

    square (1.00, 1.00)   circle (0.79, 1.00)   triangle (0.50, 1.00)   star (0.38, 0.56)

The same analyser scores rendered scenes (a test holds it to >= 99%) and the images the demo's model
generates, so the looser `max_distance` default also accepts slightly off colours.
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from seedx_jax.demo.world import BACKGROUNDS, COLOURS, COLUMNS, ROWS, Scene

PROTOTYPES = {"square": (1.0, 1.0), "circle": (np.pi / 4, 1.0), "triangle": (0.5, 1.0), "star": (0.384, 0.556)}
_NAMES = list(COLOURS) + list(BACKGROUNDS)
_PALETTE = np.asarray([COLOURS[c] for c in COLOURS] + [BACKGROUNDS[b] for b in BACKGROUNDS], np.float32)


@dataclasses.dataclass(frozen=True)
class Detection:
    shape: str
    colour: str
    cx: float  # centre of the visible extent, fraction of the width (as `world.Obj.cx`)
    cy: float
    box: tuple[int, int, int, int]  # pixel corners (x0, y0, x1, y1)
    area: int

    @property
    def cell(self) -> tuple[str, str]:
        return COLUMNS[min(int(self.cx * 3), 2)], ROWS[min(int(self.cy * 3), 2)]


def _solidity(mask: np.ndarray) -> float:
    """Area over the convex hull of the pixels' corners (boundary pixels suffice)."""
    edge = mask & ~ndimage.binary_erosion(mask)
    ys, xs = np.nonzero(edge)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    try:
        return float(mask.sum() / ConvexHull(corners).volume)
    except QhullError:
        return 0.0


def classify(mask: np.ndarray) -> str:
    """The shape of one region `[h, w]` bool (cropped to its bounding box)."""
    fill = mask.sum() / mask.size
    solidity = _solidity(mask)
    return min(PROTOTYPES, key=lambda s: (fill - PROTOTYPES[s][0]) ** 2 + (solidity - PROTOTYPES[s][1]) ** 2)


def analyse(image: Image.Image | np.ndarray, *, max_distance: float = 80.0, min_area: float = 0.002) -> list[Detection]:
    """Objects in an RGB image, largest first. `min_area` is a fraction of the image area."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, np.float32)[..., :3]
    h, w = rgb.shape[:2]
    dist = np.linalg.norm(rgb[:, :, None, :] - _PALETTE[None, None], axis=-1)
    label = np.where(dist.min(-1) <= max_distance, dist.argmin(-1), -1)
    found = []
    for index, colour in enumerate(COLOURS):
        regions, count = ndimage.label(label == index)
        for k, window in enumerate(ndimage.find_objects(regions), start=1):
            mask = regions[window] == k
            area = int(mask.sum())
            if area < min_area * h * w:
                continue
            (y0, y1), (x0, x1) = (window[0].start, window[0].stop), (window[1].start, window[1].stop)
            found.append(Detection(classify(mask), colour, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x0, y0, x1, y1),
                                   area))
    return sorted(found, key=lambda d: -d.area)


def matches(scene: Scene, found: list[Detection], *, position_tolerance: float = 0.05) -> bool:
    """Every object of the scene found once (shape, colour, centre within the tolerance), nothing else."""
    if len(found) != len(scene.objects):
        return False
    left = list(found)
    for obj in scene.objects:
        hit = next((d for d in left if d.shape == obj.shape and d.colour == obj.colour
                    and abs(d.cx - obj.cx) <= position_tolerance and abs(d.cy - obj.cy) <= position_tolerance), None)
        if hit is None:
            return False
        left.remove(hit)
    return True


def pairs(objects) -> collections.Counter:
    """(colour, 3 x 3 cell) of each object or detection, counted."""
    return collections.Counter((o.colour, o.cell) for o in objects)


def same_objects(found: list[Detection], scene: Scene) -> bool:
    """Whether the detections are the scene's objects by colour and cell, as many of each."""
    return pairs(found) == pairs(scene.objects)
