"""Pre-trains the ViT stand-in on dense labels the renderer knows, as Qwen-VL's ViT was pre-trained on
image-text data before SEED-X froze it: each of the 256 pool tokens learns to say which colours and
shapes cover its 14 x 14-pixel patch (of a 224-pixel view) and where it is.

Two things SEED-X's stages need from the features decide the targets:
- the LLM's input resampler reads all 256 tokens with 2-D positions on its keys: per-token labels;
- the de-tokenizer reads `vit_down` features (the mean of 1 x 4 token strips) through ResamplerXLV2,
  which adds no positions: each strip's mean must still tell its four tokens apart and say where the
  strip is, so heads on the strips predict the labels of each of their four tokens and the strip's
  centre. Without them a mean of four tokens forgets which of them held the object.

The views are what the pipelines show the ViT: whole images of every aspect ratio resized to a square
(the global view, and the de-tokenizer's square images) and any-res tiles.
"""
from __future__ import annotations

import dataclasses
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from PIL import Image

from seedx_jax.demo.world import BACKGROUNDS, COLOURS, SHAPES, WorldConfig, object_map, render, sample_scene
from seedx_jax.progress import Progress
from seedx_jax.vision.anyres import image_transform
from seedx_jax.vision.features import vit_down
from seedx_jax.vision.vit import QwenViT

COLOUR_CLASSES = tuple(COLOURS) + tuple(BACKGROUNDS)  # the backgrounds are colours of their tokens too
SHAPE_CLASSES = ("none",) + SHAPES
LABELS = len(COLOUR_CLASSES) + len(SHAPE_CLASSES)
STRIP = 4  # tokens per `vit_down` feature
BLOCK = 4  # each token also redraws its patch at 4 x 4 pixels: the shapes' outlines, not only their labels
PIXELS = BLOCK * BLOCK * 3
PIXEL_WEIGHT = 10.0  # pixel MSE in [-1, 1] is ~0.08 for the mean block: weighted to the labels' scale
OBJECT_WEIGHT = 4.0


@dataclasses.dataclass(frozen=True)
class ViTTraining:
    steps: int = 400
    batch: int = 16
    learning_rate: float = 2e-3  # cosine-decayed to 5%
    tile_fraction: float = 0.5  # views that are one any-res tile rather than the whole image


def view(scene, rng: random.Random, size: int, grid: int, tile_fraction: float = 0.5):
    """One ViT view of `scene` -> (pixels `[size, size, 3]` normalised, labels `[grid * grid, LABELS]`:
    per token the fractions of its patch in each colour class, then in each shape class; blocks
    `[grid * grid, BLOCK * BLOCK * 3]`: per token its patch at BLOCK x BLOCK pixels in [-1, 1])."""
    w, h = scene.width, scene.height
    box = (0, 0, w, h)
    if rng.random() < tile_fraction:
        cols, rows = rng.choice(((1, 2), (2, 1), (2, 2)))
        c, r = rng.randrange(cols), rng.randrange(rows)
        box = (c * w // cols, r * h // rows, (c + 1) * w // cols, (r + 1) * h // rows)
    image = render(scene).crop(box)
    pixels = image_transform(image, size)
    small = np.asarray(image.resize((grid * BLOCK,) * 2, Image.Resampling.BILINEAR), np.float32) / 127.5 - 1
    blocks = small.reshape(grid, BLOCK, grid, BLOCK, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, -1)
    index = np.asarray(object_map(scene).crop(box).resize((size, size), Image.Resampling.NEAREST))
    colour = np.array([COLOUR_CLASSES.index(scene.background)] + [COLOUR_CLASSES.index(o.colour)
                                                                  for o in scene.objects])
    shape = np.array([0] + [SHAPE_CLASSES.index(o.shape) for o in scene.objects])
    onehot = np.concatenate([np.eye(len(COLOUR_CLASSES), dtype=np.float32)[colour[index]],
                             np.eye(len(SHAPE_CLASSES), dtype=np.float32)[shape[index]]], -1)
    patch = size // grid
    labels = onehot.reshape(grid, patch, grid, patch, LABELS).mean((1, 3)).reshape(grid * grid, LABELS)
    return pixels, labels, blocks


def _views(seed: int, count: int, vit: QwenViT, world: WorldConfig, tile_fraction: float):
    rng = random.Random(f"{seed}-vit-views")
    cfg = vit.config
    views = [view(sample_scene(rng, world), rng, cfg.image_size, cfg.pool_grid, tile_fraction) for _ in range(count)]
    return tuple(np.stack(parts) for parts in zip(*views))


class LabelHeads(nnx.Module):
    """Linear read-outs of the features: per token its labels, pixels and (x, y); per strip its tokens'
    labels and pixels, and its centre."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.token = nnx.Linear(dim, LABELS + PIXELS + 2, rngs=rngs)
        self.strip = nnx.Linear(dim, STRIP * (LABELS + PIXELS) + 2, rngs=rngs)


def _positions(grid: int):
    """Token and strip centres, (x, y) in [0, 1]: `[grid * grid, 2]`, `[grid * grid / STRIP, 2]`."""
    ys, xs = np.mgrid[:grid, :grid]
    token = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], -1).astype(np.float32)
    return token, token.reshape(-1, STRIP, 2).mean(1)


def _soft_ce(logits, target, weight):
    return -jnp.sum(weight * jnp.sum(target * jax.nn.log_softmax(logits, -1), -1)) / jnp.sum(weight)


def _label_loss(logits, labels):
    """Soft cross-entropy of the colour and the shape fractions; a token counts 1 + OBJECT_WEIGHT x its
    object fraction, as objects cover about a tenth of the tokens and carry what matters."""
    n = len(COLOUR_CLASSES)
    weight = 1 + OBJECT_WEIGHT * (1 - labels[..., n])
    return _soft_ce(logits[..., :n], labels[..., :n], weight) + _soft_ce(logits[..., n:], labels[..., n:], weight)


def _loss(vit, heads, pixels, labels, blocks, token_xy, strip_xy):
    feats = vit(pixels)
    token = heads.token(feats)
    strip = heads.strip(vit_down(feats, STRIP))
    b, t = labels.shape[:2]
    loss = jnp.mean((token[..., -2:] - token_xy) ** 2) + jnp.mean((strip[..., -2:] - strip_xy) ** 2)
    for out in (token, strip[..., :-2].reshape(b, t, LABELS + PIXELS)):
        loss += _label_loss(out[..., :LABELS], labels) + PIXEL_WEIGHT * jnp.mean((out[..., LABELS:LABELS + PIXELS]
                                                                               - blocks) ** 2)
    return loss


def pretrain_vit(vit: QwenViT, *, seed: int, train: ViTTraining = ViTTraining(), world: WorldConfig = WorldConfig(),
                 progress: Progress | None = None) -> tuple[LabelHeads, list[float]]:
    """Trains `vit` in place -> (the label heads, for `score_vit`; losses)."""
    progress = progress or Progress(quiet=True)
    heads = LabelHeads(vit.config.output_dim, rngs=nnx.Rngs(seed))
    pixels, labels, blocks = _views(seed, max(1, train.steps * train.batch // 4), vit, world, train.tile_fraction)
    order = np.random.default_rng(seed).permutation(np.arange(train.steps * train.batch) % len(pixels))
    token_xy, strip_xy = (jnp.asarray(a) for a in _positions(vit.config.pool_grid))
    model = nnx.List([vit, heads])
    warmup = min(20, train.steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(0.0, train.learning_rate, warmup, train.steps,
                                                  0.05 * train.learning_rate)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit(donate_argnums=(0, 1))
    def step(model, optimizer, pixels, labels, blocks):
        loss, grads = nnx.value_and_grad(lambda m: _loss(m[0], m[1], pixels, labels, blocks, token_xy,
                                                         strip_xy))(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    with progress.stage(f"pre-training the ViT stand-in on dense labels ({train.steps} steps)"):
        for i in range(train.steps):
            batch = order[i * train.batch:(i + 1) * train.batch]
            losses.append(step(model, optimizer, pixels[batch], labels[batch], blocks[batch]))
            if (i + 1) % 25 == 0 or i + 1 == train.steps:
                progress.step(i + 1, train.steps, f"loss {float(losses[-1]):.3f}")
    return heads, [float(x) for x in losses]


def score_vit(vit: QwenViT, heads: LabelHeads, *, seed: int, views: int = 200,
              world: WorldConfig = WorldConfig()) -> dict:
    """Held-out accuracy of the label read-outs, over the tokens mostly covered by an object (the
    background is most tokens and easy): colour and shape per token, and per token from its strip's
    mean feature (what the de-tokenizer sees); and the MSE of the redrawn 4 x 4 blocks."""
    pixels, labels, blocks = _views(seed + 7, views, vit, world, 0.5)
    feats = nnx.jit(lambda v, x: v(x))(vit, jnp.asarray(pixels))
    n = len(COLOUR_CLASSES)
    token = np.asarray(heads.token(feats))[..., :-2]
    strip = np.asarray(heads.strip(vit_down(feats, STRIP)))[..., :-2].reshape(token.shape)
    on_object = labels[..., n] < 0.5  # less than half "none"
    scores = {}
    for name, out in (("token", token), ("strip", strip)):
        colour = out[..., :n].argmax(-1) == labels[..., :n].argmax(-1)
        shape = out[..., n:LABELS].argmax(-1) == labels[..., n:].argmax(-1)
        scores[f"standin/vit_{name}_colour_accuracy"] = float(colour[on_object].mean())
        scores[f"standin/vit_{name}_shape_accuracy"] = float(shape[on_object].mean())
        scores[f"standin/vit_{name}_pixel_mse"] = float(np.mean((out[..., LABELS:] - blocks) ** 2))
    return scores
