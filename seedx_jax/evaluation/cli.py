"""`seedx-jax eval TASK --checkpoint DIR --data SOURCE --out DIR`: a SEED-X pipeline on a benchmark.

Tasks: mc (multiple choice, SEED-Bench), yesno (POPE, MME), vqa (VQAv2, TextVQA, GQA), grounding
(RefCOCO), t2i (images for GenEval's scorer; scored here on the shapes world), edit and reconstruct
(scored on the shapes world). Predictions go to OUT/predictions.jsonl as they are made; rerunning the
same command resumes. Bad arguments, an unknown data format, a TFDS dataset that is not prepared and an
output folder that cannot be written are one line and exit 2, before any weight loads. docs/evaluation.md.
"""
from __future__ import annotations

import sys

from seedx_jax import paths
from seedx_jax.exits import ArgumentParser, describe, error_line, exit_code, interrupts_as_exceptions
from seedx_jax.precision import COMPUTE_DTYPES, LLM_WEIGHTS, Precision
from seedx_jax.sharding import mesh_argument

PROG = "seedx-jax eval"
TASK_NAMES = ("mc", "yesno", "vqa", "grounding", "t2i", "edit", "reconstruct")


def build_parser() -> ArgumentParser:
    from seedx_jax.cli import _int_at_least, _number, _seed, _side

    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=TASK_NAMES, help="what to evaluate")
    p.add_argument("--checkpoint", required=True, type=paths.argument, help="pipeline checkpoint directory")
    p.add_argument("--data", required=True, type=paths.argument,
                   help="a benchmark file (jsonl, SEED-Bench / VQAv2 / TextVQA / GQA json), a shapes-world split "
                        "folder, or tfds:NAME[/CONFIG]:SPLIT")
    p.add_argument("--out", required=True, type=paths.argument,
                   help="output folder: predictions.jsonl, metrics.json, images/ (rerun to resume)")
    p.add_argument("--images", type=paths.argument, help="folder of the benchmark's images (default: the data "
                                                         "file's folder)")
    p.add_argument("--annotations", type=paths.argument, help="VQAv2: the annotations file of --data's questions")
    p.add_argument("--tfds-data-dir", type=paths.argument,
                   help="where TFDS datasets are prepared (default: TFDS_DATA_DIR or ~/tensorflow_datasets)")
    prompts = p.add_argument_group("prompts (docs/evaluation.md lists each task's default)")
    prompts.add_argument("--template", help="the task's prompt inside the checkpoint's chat template, e.g. "
                                            "'{question} Answer yes or no.'")
    prompts.add_argument("--likelihood-template", default="{question}",
                         help="mc: the question each option's likelihood is scored after (default {question})")
    prompts.add_argument("--max-new-tokens", type=_int_at_least(1),
                         help="answer length (default: mc 16, yesno 8, vqa 32, grounding 32, t2i 120, edit 512)")
    prompts.add_argument("--grids", type=_grids, help="any-res grids images are tiled on, e.g. 1x1,1x2,2x1 "
                                                     "(default: SEED-X's eight)")
    run = p.add_argument_group("the run")
    run.add_argument("--batch-size", type=_int_at_least(1), default=8, help="items per batch (default 8)")
    run.add_argument("--decode-batch-size", type=_int_at_least(1),
                     help="LLM rows per decoding call (default: --batch-size); 1 decodes each item alone")
    run.add_argument("--seed", type=_seed, default=0, help="noise seed of drawing tasks (default 0)")
    run.add_argument("--mesh", type=mesh_argument, help="(data, fsdp, tensor) mesh for the parameters (default: "
                                                        "fsdp over every local accelerator)")
    run.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, default="float32")
    run.add_argument("--llm-weights", choices=LLM_WEIGHTS, default="float")
    run.add_argument("--overwrite", action="store_true", help="replace an evaluation of other settings in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    draw = p.add_argument_group("drawing tasks (t2i, edit, reconstruct); defaults: SEED-X's scripts")
    draw.add_argument("--height", type=_side, default=1024, help="image height in pixels (default 1024)")
    draw.add_argument("--width", type=_side, default=1024, help="image width in pixels (default 1024)")
    draw.add_argument("--steps", type=_int_at_least(1), default=50, help="denoising steps (default 50)")
    draw.add_argument("--guidance-scale", type=_number, default=7.5, help="classifier-free guidance (default 7.5)")
    draw.add_argument("--image-guidance-scale", type=_number, default=1.5, help="edit: image guidance (default 1.5)")
    draw.add_argument("--solver", choices=("euler", "ddim", "dpmpp_2m"), default="euler", help="default euler")
    return p


def _grids(text: str) -> tuple[str, ...]:
    import argparse

    from seedx_jax.vision.anyres import candidate_resolutions

    grids = tuple(g.strip() for g in text.split(",") if g.strip())
    try:
        candidate_resolutions(grids)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return grids


def summary(metrics: dict) -> str:
    """The headline numbers, one line."""
    shown = [f"{k} {v:.4f}" for k, v in metrics["metrics"].items() if isinstance(v, float)]
    return (f"{metrics['task']}: {metrics['evaluated']} of {metrics['records']} records evaluated, "
            f"{metrics['skipped']['count']} skipped; " + (", ".join(shown) or "nothing scored"))


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a usage error (one line, exit 2) or --help
        return e.code
    import jax

    from seedx_jax.cli import USER_ERRORS, out_of_memory
    from seedx_jax.numerics import NonFiniteError

    try:
        with interrupts_as_exceptions():
            from seedx_jax.evaluation.evaluate import evaluate
            from seedx_jax.serve.cli import _mesh

            precision = Precision(compute_dtype=args.compute_dtype, llm_weights=args.llm_weights)
            precision.check_device()
            metrics = evaluate(
                args.task, args.checkpoint, args.data, args.out, images_dir=args.images, annotations=args.annotations,
                tfds_data_dir=args.tfds_data_dir, overwrite=args.overwrite, quiet=args.quiet, mesh=_mesh(args.mesh),
                precision=precision, template=args.template, likelihood_template=args.likelihood_template,
                max_new_tokens=args.max_new_tokens, grids=args.grids, batch_size=args.batch_size, seed=args.seed,
                decode_batch_size=args.decode_batch_size or 0,
                height=args.height, width=args.width, steps=args.steps, guidance_scale=args.guidance_scale,
                image_guidance_scale=args.image_guidance_scale, solver=args.solver)
    except USER_ERRORS as e:
        print(f"{PROG}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except (NonFiniteError, jax.errors.JaxRuntimeError, MemoryError) as e:
        line = error_line(e) if isinstance(e, NonFiniteError) else out_of_memory(e)
        if line is None:
            raise
        print(f"{PROG}: {line}; the predictions so far are kept (rerun to resume)", file=sys.stderr)
        return 1
    except BaseException as e:  # Ctrl-C, SIGTERM
        if isinstance(e, (SystemExit, Exception)):
            raise
        print(f"\n{PROG}: {describe(e)}; the predictions so far are kept (rerun the command to resume)",
              file=sys.stderr)
        return exit_code(e)
    print(summary(metrics))
    print(f"wrote {paths.display(args.out)}/metrics.json", file=sys.stderr)
    return 0
