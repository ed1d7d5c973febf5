"""The shapes world: seeded scenes of flat coloured shapes on a plain background, rendered without
anti-aliasing so a classical analyser (`seedx_jax.demo.analyse`) can read them back exactly.

A scene has 1-4 non-overlapping, axis-aligned objects (circle, square, triangle, star) in 6 colours,
on one of 3 backgrounds; images come in several sizes and aspect ratios so any-res tiling is used.
Positions are described on a 3 x 3 grid of the image (left/center/right x top/middle/bottom).
"""
from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
           "purple": (140, 60, 180), "orange": (245, 130, 30)}
BACKGROUNDS = {"white": (250, 250, 250), "grey": (200, 200, 200), "beige": (235, 225, 200)}
COLUMNS = ("left", "center", "right")
ROWS = ("top", "middle", "bottom")
# (width, height) in units of `WorldConfig.unit` pixels: square, landscape and portrait images
ASPECTS = ((2, 2), (3, 2), (2, 3), (4, 2), (2, 4), (3, 3))
# generated and edited images are square, as the de-tokenizer draws them (centre crops)
GENERATION_ASPECTS = ((2, 2),)


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    unit: int = 112  # image sides are multiples of this (ASPECTS); 112 -> 224..448 px
    min_objects: int = 1
    max_objects: int = 4
    min_size: float = 0.14  # object side as a fraction of the image's shorter side
    max_size: float = 0.26


@dataclasses.dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    cx: float  # centre, fraction of the image width
    cy: float  # centre, fraction of the image height
    size: float  # side, fraction of the shorter image side

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixel corners (x0, y0, x1, y1) of the object's square."""
        half = self.size * min(width, height) / 2
        x, y = self.cx * width, self.cy * height
        return (round(x - half), round(y - half), round(x + half), round(y + half))

    @property
    def cell(self) -> tuple[str, str]:
        """(column, row) on the 3 x 3 grid."""
        return COLUMNS[min(int(self.cx * 3), 2)], ROWS[min(int(self.cy * 3), 2)]


@dataclasses.dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: str
    objects: tuple[Obj, ...]

    def replace(self, **changes) -> "Scene":
        return dataclasses.replace(self, **changes)


def _overlaps(a: Obj, b: Obj, width: int, height: int, margin: int = 4) -> bool:
    ax0, ay0, ax1, ay1 = a.box(width, height)
    bx0, by0, bx1, by1 = b.box(width, height)
    return not (ax1 + margin <= bx0 or bx1 + margin <= ax0 or ay1 + margin <= by0 or by1 + margin <= ay0)


def place(rng: random.Random, scene: Scene, shape: str, colour: str, cfg: WorldConfig,
          others: tuple[Obj, ...] | None = None, tries: int = 200) -> Obj | None:
    """A new object that fits inside the image without touching `others` (default: the scene's)."""
    others = scene.objects if others is None else others
    short = min(scene.width, scene.height)
    for _ in range(tries):
        size = rng.uniform(cfg.min_size, cfg.max_size)
        half_x, half_y = size * short / 2 / scene.width, size * short / 2 / scene.height
        obj = Obj(shape, colour, round(rng.uniform(half_x + 0.01, 1 - half_x - 0.01), 4),
                  round(rng.uniform(half_y + 0.01, 1 - half_y - 0.01), 4), round(size, 4))
        if not any(_overlaps(obj, o, scene.width, scene.height) for o in others):
            return obj
    return None


def sample_scene(rng: random.Random, cfg: WorldConfig = WorldConfig(), aspects=ASPECTS) -> Scene:
    aw, ah = rng.choice(aspects)
    scene = Scene(aw * cfg.unit, ah * cfg.unit, rng.choice(sorted(BACKGROUNDS)), ())
    for _ in range(rng.randint(cfg.min_objects, cfg.max_objects)):
        obj = place(rng, scene, rng.choice(SHAPES), rng.choice(sorted(COLOURS)), cfg)
        if obj is not None:
            scene = scene.replace(objects=scene.objects + (obj,))
    return scene


def _star(x0, y0, x1, y1) -> list[tuple[float, float]]:
    """A 5-pointed star (inner radius 0.45 of the outer) pointing up, stretched to fill the box, so
    every shape's visible extent is its box (the analyser reads positions from extents)."""
    unit = [((1.0 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
             (1.0 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    xs, ys = [p[0] for p in unit], [p[1] for p in unit]
    sx, sy = (x1 - 1 - x0) / (max(xs) - min(xs)), (y1 - 1 - y0) / (max(ys) - min(ys))
    return [(x0 + (x - min(xs)) * sx, y0 + (y - min(ys)) * sy) for x, y in unit]


def _draw(scene: Scene, image: Image.Image, fill) -> Image.Image:
    """Draws each object of `scene` on `image` in `fill(index, obj)`."""
    draw = ImageDraw.Draw(image)
    for index, obj in enumerate(scene.objects):
        x0, y0, x1, y1 = obj.box(scene.width, scene.height)
        colour = fill(index, obj)
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
        elif obj.shape == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)
        else:
            draw.polygon(_star(x0, y0, x1, y1), fill=colour)
    return image


def render(scene: Scene) -> Image.Image:
    return _draw(scene, Image.new("RGB", (scene.width, scene.height), BACKGROUNDS[scene.background]),
                 lambda index, obj: COLOURS[obj.colour])


def object_map(scene: Scene) -> Image.Image:
    """The scene's pixels labelled by object: mode "L", 0 = background, i + 1 = `scene.objects[i]`
    (the same drawing as `render`, so labels and pixels align exactly)."""
    return _draw(scene, Image.new("L", (scene.width, scene.height), 0), lambda index, obj: index + 1)


def pixels(scene: Scene) -> np.ndarray:
    return np.asarray(render(scene))
