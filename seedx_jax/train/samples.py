"""Periodic de-tokenizer samples during training: for a few fixed training images, the target (top
row) above what the current de-tokenizer draws from its ViT features (bottom row; stage 2 also gets
the source image as its condition), written as one PNG per step."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from seedx_jax.detokenizer.model import negative_features, to_uint8
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.train.stages import DetokTrainee
from seedx_jax.train.workdir import write_file
from seedx_jax.vision.features import vit_down


def write_samples(path: str, model: DetokTrainee, batch: dict[str, np.ndarray], *, num_steps: int, seed: int = 0) -> str:
    """batch: `target` [N, R, R, 3] in [-1, 1], `view` [N, S, S, 3], stage 2 `source` [N, R, R, 3]."""
    vit, detok = model.vit, model.detokenizer
    side = batch["target"].shape[1]
    features = vit_down(vit(batch["view"]))
    condition = (batch["source"] + 1) / 2 if "source" in batch else None
    images = detok.generate(features, negative_features(vit, pooled=True), height=side, width=side,
                            sampler=SamplerConfig(num_steps=num_steps), condition_images=condition, seed=seed)
    rows = [to_uint8(batch["target"]), to_uint8(images)]
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    write_file(path, buf.getvalue())
    return path
