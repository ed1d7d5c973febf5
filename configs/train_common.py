"""Shared pieces of the training configs (configs/detok_stage1.py ... sft_edit.py).

`micro_batch` is GLOBAL (all processes and devices); SEED-X's per-GPU sizes are given x 8 GPUs.
Every config also has a `:tiny` variant (`--config configs/sft_edit.py:tiny`): the tiny models of
the tests, small images and short sequences, for CPU smoke runs.
"""
import ml_collections

from seedx_jax.train.optim import OptimConfig
from seedx_jax.vision import anyres
from seedx_jax.vision.anyres import COMPREHENSION_GRIDS

EDIT_GRIDS = anyres.EDIT_GRIDS  # 1x1: text-to-image and edit images
TINY_GRIDS = ("1x1", "1x2", "2x1")


def source(fmt: str, task: str, *, weight: float = 1.0, micro_batch: int, max_length: int = 0, paths: str = "",
           image_dir: str = "", grids=COMPREHENSION_GRIDS, resolution: int = 1024, min_resolution: int = 0,
           min_aspect_ratio: float = 0.0, similarity_threshold: float = 0.0) -> ml_collections.ConfigDict:
    """One data source; `paths` is a comma-separated list of globs."""
    return ml_collections.ConfigDict(dict(
        format=fmt, task=task, paths=paths, image_dir=image_dir, weight=weight, micro_batch=micro_batch,
        max_length=max_length, max_views=max(int(g[0]) * int(g[2]) for g in grids) + 1, grids=tuple(grids),
        resolution=resolution, min_resolution=min_resolution, min_aspect_ratio=min_aspect_ratio,
        similarity_threshold=similarity_threshold))


def base(stage: str, tiny: bool) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = stage
    c.seed = 42
    c.model = ml_collections.ConfigDict()
    c.model.vit = dict(preset="qwen_vit_tiny", output_dim=16, pool_heads=2) if tiny else dict(
        preset="qwen_vit_g_448", dtype="bfloat16", remat="full")
    c.init = ml_collections.ConfigDict()  # <part>: a converted checkpoint directory ("" = random init)
    c.init.vit = ""
    c.tokenizer = ""  # MLLM stages: a tokenizer directory (seedx-jax convert tokenizer)
    c.optim = OptimConfig().to_dict()
    c.train = ml_collections.ConfigDict(dict(
        steps=20000, accumulation=2, log_every=10, checkpoint_every=1000, keep=3, keep_every=5000,
        max_nonfinite=100, async_checkpoints=True, peak_tflops=0.0,  # 0: from the device kind
        sample_every=0, sample_steps=25, sample_count=4))  # de-tokenizer stages: PNG samples
    c.data = ml_collections.ConfigDict(dict(seed=42, workers=0 if tiny else 8))
    c.data.sources = ml_collections.ConfigDict()
    # axis sizes per slice (-1: the remaining devices), dcn_* across slices; num_devices 0 = all devices
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, dcn_data=1, dcn_fsdp=1, dcn_tensor=1,
                                            num_devices=0))
    c.sharding_rules = ml_collections.ConfigDict()  # logical axis -> mesh axes overrides
    if tiny:
        c.optim.update(learning_rate=1e-3, warmup_steps=2, total_steps=200)
        c.train.update(steps=50, log_every=5, checkpoint_every=25, keep_every=0, sample_steps=4, sample_count=2)
    return c


def mllm(stage: str, tiny: bool) -> ml_collections.ConfigDict:
    """Pre-training / instruction tuning: LoRA r=32 alpha=32 on SEED-X's LLM (docs/training_recipe.md)."""
    c = base(stage, tiny)
    if tiny:
        c.model.agent = dict(preset="tiny")
    else:
        c.model.agent = dict(preset="seed_x", llm=dict(dtype="bfloat16", remat="dots_no_batch"),
                             input_resampler=dict(dtype="bfloat16"), output_resampler=dict(dtype="bfloat16"))
    c.model.lora = dict(rank=4 if tiny else 32, alpha=4.0 if tiny else 32.0, dropout=0.05,
                        modules_to_save=("input_layernorm", "post_attention_layernorm", "norm"),
                        train_embeddings=True)
    c.init.agent = ""
    return c


def detok(stage: str, tiny: bool) -> ml_collections.ConfigDict:
    c = base(stage, tiny)
    preset = {"detok_stage1": "stage1", "detok_stage2": "stage2"}[stage]
    c.model.detokenizer = dict(preset=f"tiny{'_edit' if stage == 'detok_stage2' else ''}") if tiny else dict(
        preset=preset, unet=dict(dtype="bfloat16", remat="full"))
    c.init.detokenizer = ""  # stage 2 may start from a stage-1 checkpoint: conv_in is widened (as official)
    # stage 1: "attention_kv" (SEED-X, over pretrained SDXL) or "all" (a U-Net with no pretraining)
    c.train.unet_trainable = "attention_kv"
    c.detok_loss = ml_collections.ConfigDict(dict(cond_drop=0.1, image_drop=0.1))  # [UNKNOWN] CFG dropout
    return c
