"""Stand-ins for the pretrained parts SEED-X starts from and never trains (Qwen-VL's ViT, SDXL's VAE),
which a laptop does not have:
- ViT: pre-trained on the world's dense labels (`seedx_jax.demo.vit_pretrain`), its attention pool
  started position-aligned (`align_pool`: each of the 256 tokens first sees its own neighbourhood,
  without which the pool stays uniform and nothing is learned in a few hundred steps), and its output
  centred on the world's images (`centre_output`); `probe_vit` measures how much of the pixels a
  linear map reads back from the tokens;
- VAE: trained briefly (reconstruction MSE with object pixels weighted up + a small KL term); its
  `scaling_factor` is set to 1 / std of the latents, as SD's was, so the U-Net sees unit-variance
  latents; `score_vae` reads its round trips with the analyser.
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
from seedx_jax.demo.analyse import analyse, same_objects
from seedx_jax.detokenizer.model import to_uint8
from seedx_jax.diffusion.vae import AutoencoderKL, VAEConfig
from seedx_jax.progress import Progress
from seedx_jax.vision.anyres import image_transform
from seedx_jax.vision.vit import QwenViT
from seedx_jax.demo.world import GENERATION_ASPECTS, WorldConfig, render, sample_scene

LOGVAR_INIT = -10.0
VIT_TARGET_SIDE = 64  # the probe reads a 64 x 64 copy: a 4 x 4 block per token of the 16 x 16 pool


@dataclasses.dataclass(frozen=True)
class VAETraining:
    steps: int = 200
    batch: int = 16
    learning_rate: float = 2e-3  # cosine-decayed to 5%
    kl_weight: float = 1e-6
    object_weight: float = 10.0


def _scenes(seed: int, count: int, cfg: WorldConfig) -> list:
    return [render(sample_scene(random.Random(f"{seed}-standin-{i}"), cfg)) for i in range(count)]


def centre_output(vit: QwenViT, *, seed: int, images: int = 64, world: WorldConfig = WorldConfig()) -> None:
    """Zero-mean, unit-std features on the world's images, as the LLM regresses them with an MSE and the
    resamplers read them: `ln_post`'s bias takes the mean out (features = ln_post(x) @ proj) and `proj`
    is rescaled."""
    views = np.stack([image_transform(p, vit.config.image_size) for p in _scenes(seed + 3, images, world)])
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
        # objects cover about a tenth of the pixels: weighted up, or the decoder learns the backgrounds
        # first and the objects' colours hundreds of steps later
        background = jnp.median(batch.reshape(batch.shape[0], -1, 3), axis=1)[:, None, None]
        on_object = jnp.any(jnp.abs(batch - background) > 0.1, axis=-1, keepdims=True)
        weight = 1 + train.object_weight * on_object
        return jnp.sum(weight * (recon - batch) ** 2) / jnp.sum(weight) / 3 + train.kl_weight * kl

    @nnx.jit(donate_argnums=(0, 1))
    def step(vae, optimizer, batch, key):
        loss, grads = nnx.value_and_grad(loss_fn)(vae, batch, key)
        optimizer.update(vae, grads)
        return loss

    vae = AutoencoderKL(cfg, rngs=nnx.Rngs(seed))
    # the posterior starts nearly deterministic (std e^-5): at the default logvar 0 the decoder first
    # sees latents drowned in unit noise, and a few hundred steps never move logvar far enough
    bias = vae.quant_conv.bias
    bias[...] = bias[...].at[cfg.latent_channels:].set(LOGVAR_INIT)
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


def score_vae(vae: AutoencoderKL, resolution: int, *, seed: int, images: int = 64,
              world: WorldConfig = WorldConfig()) -> dict:
    """Held-out round trips (encode -> latent mean -> decode) of square scenes: PSNR, and the fraction
    whose (colour, 3 x 3 cell) objects the analyser reads back unchanged - the ceiling of every image
    the de-tokenizer draws."""
    scenes = [sample_scene(random.Random(f"{seed}-vae-score-{i}"), world, GENERATION_ASPECTS) for i in range(images)]
    batch = np.stack([square_crop(render(s), resolution) for s in scenes])
    recon = to_uint8(nnx.jit(lambda v, x: v.decode(v.encode(x)[0]))(vae, jnp.asarray(batch)))
    truth = to_uint8(jnp.asarray(batch))
    mse = np.mean((np.asarray(recon, np.float64) - np.asarray(truth, np.float64)) ** 2, axis=(1, 2, 3))
    return {"standin/vae_psnr": float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10)))),
            "standin/vae_objects": float(np.mean([same_objects(analyse(r), s) for r, s in zip(recon, scenes)]))}
