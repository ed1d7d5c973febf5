"""The demo driver: data -> stand-in ViT and VAE -> de-tokenizer stages 1 and 2 -> MLLM instruction
tuning -> edit fine-tuning -> held-out evaluation -> report, in one output folder written atomically
(a failed or interrupted run leaves nothing behind; an existing report folder is replaced only with
`overwrite`, and a folder that is not a demo report never: `seedx_jax.outputs`).

The training stages are the real `seedx_jax.train.train` on `configs/demo.py`; the folder keeps each
run's logs (`runs/<stage>/metrics.jsonl`, TensorBoard events) and the two trained pipelines
(`models/seedx_i`, `models/seedx_edit`) that the `seedx-jax` commands load.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import sys
import time

import jax
from flax import nnx

from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import load_model, save_model, save_pipeline
from seedx_jax.demo import dataset, evaluate, report, standins, vit_pretrain
from seedx_jax.detokenizer.model import Detokenizer
from seedx_jax.outputs import atomic_output, write_marker
from seedx_jax.pipelines import SeedX
from seedx_jax.progress import Progress
from seedx_jax.train.build import model_configs
from seedx_jax.train.loop import train
from seedx_jax.vision.vit import QwenViT


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    seed: int = 0
    train_scenes: int = 3000
    test_scenes: int = 100
    vit_steps: int = 300
    vae_steps: int = 450
    probe_images: int = 200
    max_steps: int = 0  # > 0: cap every training stage (the quick smoke run)
    sampler_steps: int = 20
    guidance_scale: float = 3.0  # [choice] milder than SEED-X's 7.5 for briefly trained de-tokenizers; not tuned
    samples: int = 4  # report examples per task


QUICK = DemoOptions(train_scenes=48, test_scenes=3, vit_steps=4, vae_steps=4, probe_images=20, max_steps=3,
                    sampler_steps=2, samples=2)


def demo_config(stage: str):
    """configs/demo.py:<stage> (the `configs` package is installed with seedx_jax)."""
    return importlib.import_module("configs.demo").get_config(stage)


def _stage_config(stage: str, root: str, opts: DemoOptions, init: dict, vae_scale: float):
    config = demo_config(stage)
    config.seed = config.data.seed = opts.seed
    config.tokenizer = os.path.join(root, "data", "tokenizer")
    for source in config.data.sources.values():
        source.paths = os.path.join(root, source.paths)
    if "detokenizer" in config.model:
        config.model.detokenizer.vae.scaling_factor = vae_scale
    for part, path in init.items():
        config.init[part] = path
    if opts.max_steps:
        config.train.steps = min(config.train.steps, opts.max_steps)
        config.optim.update(warmup_steps=1, total_steps=config.train.steps)
    config.mesh.num_devices = 1  # the stages are tiny: one device, whatever XLA_FLAGS offers
    return config


def _train_stage(stage: str, root: str, opts: DemoOptions, init: dict, vae_scale: float, curves: dict):
    config = _stage_config(stage, root, opts, init, vae_scale)
    result = train(config, os.path.join(root, "runs", stage), log_stream=sys.stderr)
    shutil.rmtree(os.path.join(root, "runs", stage, "checkpoints"), ignore_errors=True)
    curves[stage] = [(h["step"], h["loss/loss"]) for h in result.history]
    return nnx.merge(result.graphdef, result.state.params, result.rest)


KIND = "demo_report"


def make_standins(models: str, opts: DemoOptions, progress: Progress, curves: dict) -> tuple[float, dict]:
    """The pre-trained ViT (`models/vit`) and the de-tokenizer's starting point with the pre-trained VAE
    (`models/detok_init`), each scored on held-out scenes -> (the VAE's scaling factor, the scores)."""
    cfgs = model_configs(demo_config("detok_stage1"))
    vit = QwenViT(cfgs["vit"], rngs=nnx.Rngs(opts.seed))
    standins.align_pool(vit)
    heads, losses = vit_pretrain.pretrain_vit(vit, seed=opts.seed, progress=progress,
                                              train=vit_pretrain.ViTTraining(steps=opts.vit_steps))
    curves["standin_vit"] = list(enumerate(losses, 1))
    scores = vit_pretrain.score_vit(vit, heads, seed=opts.seed)
    standins.centre_output(vit, seed=opts.seed)
    scores.update(standins.probe_vit(vit, seed=opts.seed, images=opts.probe_images))
    save_model(os.path.join(models, "vit"), vit)
    resolution = demo_config("detok_stage1").data.sources.images.resolution
    vae, losses = standins.pretrain_vae(cfgs["detokenizer"].vae, resolution, seed=opts.seed,
                                        train=standins.VAETraining(steps=opts.vae_steps), progress=progress)
    curves["standin_vae"] = list(enumerate(losses, 1))
    scores.update(standins.score_vae(vae, resolution, seed=opts.seed))
    detok = Detokenizer(cfgs["detokenizer"].replace(vae=vae.config), rngs=nnx.Rngs(opts.seed))
    detok.vae = vae
    save_model(os.path.join(models, "detok_init"), detok)
    return vae.config.scaling_factor, scores


def run_demo(out: str, opts: DemoOptions = DemoOptions(), progress: Progress | None = None, *,
             overwrite: bool = False) -> dict:
    """Everything, written to `out` (appears atomically at the end; an earlier report there is replaced
    only with `overwrite`) -> the metrics."""
    progress = progress or Progress()
    start = time.perf_counter()
    curves: dict = {}
    with atomic_output(out, KIND, overwrite=overwrite) as root:
        models = os.path.join(root, "models")
        with progress.stage("[1/7] writing the shapes world (train and held-out splits, tokenizer)"):
            data = os.path.join(root, "data")
            for split, n in (("train", opts.train_scenes), ("test", opts.test_scenes)):
                dataset.write_split(os.path.join(data, split), seed=opts.seed, split=split, scenes=n)
            tokenizer = dataset.write_tokenizer(os.path.join(data, "tokenizer"), seed=opts.seed)

        with progress.stage("[2/7] stand-ins for the pretrained ViT and VAE"):
            scale, standin_scores = make_standins(models, opts, progress, curves)

        vit_dir = os.path.join(models, "vit")
        with progress.stage("[3/7] de-tokenizer stage 1 (ViT features -> image)"):
            trained = _train_stage("detok_stage1", root, opts, dict(vit=vit_dir, detokenizer=os.path.join(
                models, "detok_init")), scale, curves)
            save_model(os.path.join(models, "detok_stage1"), trained.detokenizer)
        with progress.stage("[4/7] de-tokenizer stage 2 (+ the source image's latent, for editing)"):
            trained = _train_stage("detok_stage2", root, opts, dict(vit=vit_dir, detokenizer=os.path.join(
                models, "detok_stage1")), scale, curves)
            save_model(os.path.join(models, "detok_stage2"), trained.detokenizer)
        with progress.stage("[5/7] MLLM instruction tuning (VQA, grounding, text-to-image)"):
            trained = _train_stage("sft_comp_gen", root, opts, dict(vit=vit_dir), scale, curves)
            save_model(os.path.join(models, "agent_i"), trained.agent)
        with progress.stage("[6/7] MLLM edit tuning (from the instruction-tuned model)"):
            trained = _train_stage("sft_edit", root, opts, dict(vit=vit_dir, agent=os.path.join(models, "agent_i")),
                                   scale, curves)
            save_model(os.path.join(models, "agent_edit"), trained.agent)

        with progress.stage("[7/7] evaluating on held-out scenes"):
            metrics, samples = evaluate_models(root, opts, tokenizer, progress)
        metrics.update(standin_scores)
        metrics["seconds"] = round(time.perf_counter() - start, 1)
        notes = [f"{opts.train_scenes} training scenes, {opts.test_scenes} held-out scenes, seed {opts.seed}, "
                 f"{jax.device_count()} {jax.devices()[0].platform} device(s), {metrics['seconds']:.0f} s in all"]
        if opts.max_steps:
            notes.insert(0, f"QUICK SMOKE RUN: at most {opts.max_steps} steps per stage; the figures say nothing "
                            "about the model (the full run: python -m seedx_jax.demo without --quick)")
        report.write_report(root, metrics, curves, samples, notes)
        write_marker(root, KIND, seed=opts.seed, options=dataclasses.asdict(opts))
        for part in ("vit", "detok_init", "detok_stage1", "detok_stage2", "agent_i", "agent_edit"):
            shutil.rmtree(os.path.join(models, part))  # the two pipelines hold what is kept
    return metrics


def evaluate_models(root: str, opts: DemoOptions, tokenizer: SeedXTokenizer, progress: Progress):
    """The trained parts as the two SEED-X pipelines (saved as `models/seedx_i`, `models/seedx_edit`),
    scored on the held-out split -> (metrics, report samples)."""
    models = os.path.join(root, "models")
    vit = load_model(os.path.join(models, "vit"), "vit")
    load = lambda name, kind: load_model(os.path.join(models, name), kind)  # noqa: E731
    pipe_i = SeedX(tokenizer, vit, load("agent_i", "agent"), load("detok_stage1", "detokenizer"), template="seed_x_i")
    pipe_edit = SeedX(tokenizer, vit, load("agent_edit", "agent"), load("detok_stage2", "detokenizer"),
                      template="seed_x_edit")
    save_pipeline(os.path.join(models, "seedx_i"), tokenizer=tokenizer, vit=vit, agent=pipe_i.agent,
                  detokenizer=pipe_i.detokenizer, template="seed_x_i")
    save_pipeline(os.path.join(models, "seedx_edit"), tokenizer=tokenizer, vit=vit, agent=pipe_edit.agent,
                  detokenizer=pipe_edit.detokenizer, template="seed_x_edit")
    side = demo_config("detok_stage1").data.sources.images.resolution
    grids = tuple(demo_config("sft_comp_gen").data.sources.vqa.grids)  # VQA is asked as it was trained
    pipes = {"i": (os.path.join(models, "seedx_i"), pipe_i), "edit": (os.path.join(models, "seedx_edit"), pipe_edit)}
    with progress.stage("  held-out tasks through seedx-jax eval (eval/<task>/)"):
        metrics, samples = evaluate.run_all(pipes, os.path.join(root, "data", "test"), os.path.join(root, "eval"),
                                            side=side, grids=grids, steps=opts.sampler_steps,
                                            guidance=opts.guidance_scale, seed=opts.seed, scenes=opts.test_scenes,
                                            keep=opts.samples)
    return metrics, samples
