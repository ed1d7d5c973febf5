"""Stand-ins for the pretrained parts SEED-X starts from and never trains (Qwen-VL's ViT, SDXL's VAE),
which a laptop does not have:
- ViT: random, with its attention pool started position-aligned (`align_pool`), so each of the 256
  tokens is a random projection of its neighbourhood - colour, shape and, by its index, position -
  and its output centred on the world's images (`centre_output`).
  Training it as an autoencoder did not beat the image-mean baseline in a few hundred steps; the
  aligned random one does without any (`probe_vit` measures it, the report shows the numbers);
- VAE: trained briefly (reconstruction MSE + a small KL term); its `scaling_factor` is set to
  1 / std of the latents, as SD's was, so the U-Net sees unit-variance latents.
Both stay frozen in every later stage, as in the paper.
"""
from __future__ import annotations

import dataclasses
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seedx_jax.data.examples import square_crop
from seedx_jax.diffusion.vae import AutoencoderKL, VAEConfig
from seedx_jax.progress import Progress
from seedx_jax.vision.anyres import image_transform
from seedx_jax.vision.vit import QwenViT, VisionConfig
from seedx_jax.demo.world import WorldConfig, render, sample_scene

VIT_TARGET_SIDE = 64  # the probe reads a 64 x 64 copy: a 4 x 4 block per token of the 16 x 16 pool


@dataclasses.dataclass(frozen=True)
class VAETraining:
    steps: int = 200
    batch: int = 16
    learning_rate: float = 2e-3  # cosine-decayed to 5%
    kl_weight: float = 1e-4


def _scenes(seed: int, count: int, cfg: WorldConfig) -> list:
    return [render(sample_scene(random.Random(f"{seed}-standin-{i}"), cfg)) for i in range(count)]


def vit_standin(cfg: VisionConfig, *, seed: int, calibration_images: int = 64,
                world: WorldConfig = WorldConfig()) -> QwenViT:
    """A random ViT with its attention pool position-aligned (`align_pool`) and its output centred and
    scaled on the world's images (`centre_output`): no training."""
    vit = QwenViT(cfg, rngs=nnx.Rngs(seed))
    align_pool(vit)
    pictures = _scenes(seed + 3, calibration_images, world)
    centre_output(vit, np.stack([image_transform(p, cfg.image_size) for p in pictures]))
    return vit


def centre_output(vit: QwenViT, views: np.ndarray) -> None:
    """Zero-mean, unit-std features on `views` `[N, S, S, 3]`: a random ViT's tokens share one large
    image-independent component (about 7x the part that varies with the image), which would leave every
    image's features nearly alike to the resamplers that read them. `ln_post`'s bias takes it out
    (features = ln_post(x) @ proj), `proj` is rescaled."""
    run = nnx.jit(lambda v, x: v(x))
    proj = np.asarray(vit.proj[...])
    mean = np.asarray(run(vit, jnp.asarray(views))).mean((0, 1))
    vit.ln_post.bias[...] = vit.ln_post.bias[...] - jnp.asarray(mean @ np.linalg.pinv(proj))
    std = float(np.asarray(run(vit, jnp.asarray(views))).std())
    vit.proj[...] = vit.proj[...] / std


def align_pool(vit: QwenViT, sharpness: float = 8.0, content: float = 0.03) -> None:
    """Make query i of the attention pool attend to the patches around grid cell i.

    A freshly initialised pool attends almost uniformly, so every token is about the image mean. Here
    the queries are the bare sincos table, the q/k projections scaled identities (logits = `sharpness`
    x the table's dot products, which peak at equal positions) and the keys' content is scaled down
    by `content`, so each token is a random projection of its neighbourhood. Without value biases the
    tokens vary between images as much as their size (a bias would dominate the tiny content, and
    the de-tokenizer's resampler would see nearly the same features for every image).
    """
    pool = vit.attn_pool
    dim = pool.cfg.embed_dim
    head = dim // pool.cfg.num_heads
    gain = (sharpness * head ** 0.5) ** 0.5
    pool.query[...] = jnp.zeros_like(pool.query[...])
    pool.ln_kv.scale[...] = jnp.full_like(pool.ln_kv.scale[...], content)
    for proj in (pool.attn.q_proj, pool.attn.k_proj):
        proj.kernel[...] = gain * jnp.eye(dim, dtype=proj.kernel.dtype)
    for proj in (pool.attn.q_proj, pool.attn.k_proj, pool.attn.v_proj, pool.attn.out_proj):
        proj.bias[...] = jnp.zeros_like(proj.bias[...])  # the scaled-down content, not a bias, drives ln_post


def probe_vit(vit: QwenViT, *, seed: int, images: int = 300, world: WorldConfig = WorldConfig()) -> dict:
    """How much of the image the features hold: a least-squares linear map from each token to the 4 x 4
    block under it (of a 64 x 64 copy), fitted on half the images, MSE on the other half, next to the
    MSE of predicting the mean block."""
    pictures = _scenes(seed + 2, images, world)
    views = np.stack([image_transform(p, vit.config.image_size) for p in pictures])
    small = np.stack([np.asarray(p.resize((VIT_TARGET_SIDE,) * 2), np.float32) / 127.5 - 1 for p in pictures])
    target = _blocks(small, vit.config.pool_grid)
    feats = np.asarray(nnx.jit(lambda v, x: v(x))(vit, jnp.asarray(views)))
    x = np.concatenate([feats, np.ones((*feats.shape[:2], 1), np.float32)], -1)
    half = images // 2
    fit = lambda a: a[:half].reshape(-1, a.shape[-1])  # noqa: E731
    held = lambda a: a[half:].reshape(-1, a.shape[-1])  # noqa: E731
    weights = np.linalg.lstsq(fit(x), fit(target), rcond=None)[0]
    return {"standin/vit_probe_mse": float(np.mean((held(x) @ weights - held(target)) ** 2)),
            "standin/mean_block_mse": float(np.mean((held(target) - fit(target).mean(0)) ** 2))}


def _blocks(images: np.ndarray, grid: int) -> np.ndarray:
    """[N, S, S, 3] -> [N, grid * grid, (S / grid)^2 * 3], tokens in raster order."""
    n, s = images.shape[:2]
    b = s // grid
    return images.reshape(n, grid, b, grid, b, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, grid * grid, b * b * 3)


def pretrain_vae(cfg: VAEConfig, resolution: int, *, seed: int, train: VAETraining = VAETraining(),
                 world: WorldConfig = WorldConfig(),
                 progress: Progress | None = None) -> tuple[AutoencoderKL, list[float]]:
    """An autoencoder of `resolution`-pixel centre crops (each seen ~4 times); the returned VAE's
    config carries the measured `scaling_factor` -> (VAE, losses)."""
    progress = progress or Progress(quiet=True)
    pictures = _scenes(seed + 1, max(1, train.steps * train.batch // 4), world)
    images = np.stack([square_crop(p, resolution) for p in pictures])
    order = np.random.default_rng(seed + 1).permutation(np.arange(train.steps * train.batch) % len(pictures))

    def loss_fn(vae, batch, key):
        mean, logvar = vae.encode(batch)
        recon = vae.decode(vae.sample(mean, logvar, key))
        kl = 0.5 * jnp.mean(mean ** 2 + jnp.exp(logvar) - 1 - logvar)
        return jnp.mean((recon - batch) ** 2) + train.kl_weight * kl

    @nnx.jit(donate_argnums=(0, 1))
    def step(vae, optimizer, batch, key):
        loss, grads = nnx.value_and_grad(loss_fn)(vae, batch, key)
        optimizer.update(vae, grads)
        return loss

    vae = AutoencoderKL(cfg, rngs=nnx.Rngs(seed))
    schedule = optax.cosine_decay_schedule(train.learning_rate, train.steps, 0.05)
    optimizer = nnx.Optimizer(vae, optax.adam(schedule), wrt=nnx.Param)
    losses, key = [], jax.random.PRNGKey(seed)
    with progress.stage(f"pre-training the VAE stand-in ({train.steps} steps)"):
        for i in range(train.steps):
            key, sub = jax.random.split(key)
            losses.append(step(vae, optimizer, images[order[i * train.batch:(i + 1) * train.batch]], sub))
            if (i + 1) % 25 == 0 or i + 1 == train.steps:
                progress.step(i + 1, train.steps, f"loss {float(losses[-1]):.4f}")
    mean = nnx.jit(lambda v, x: v.encode(x)[0])(vae, jnp.asarray(images[:256]))
    scaled = AutoencoderKL(cfg.replace(scaling_factor=round(1.0 / float(jnp.std(mean)), 5)), rngs=nnx.Rngs(seed))
    nnx.update(scaled, nnx.state(vae))
    return scaled, [float(x) for x in losses]
