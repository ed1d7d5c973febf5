"""`evaluate(task, checkpoint, data, out)`: the Python API of `seedx-jax eval`.

Everything that can be refused is refused before a weight loads: the task, the settings, the data
source (read whole; bad records become skipped problems), the checkpoint's parts (a task that draws
needs its de-tokenizer) and the output folder.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from seedx_jax import paths
from seedx_jax.agent.prompts import PromptError
from seedx_jax.checkpoint import CheckpointError
from seedx_jax.diffusion.sampling import RenderSettings
from seedx_jax.evaluation.data import data_inputs, is_tfds, open_data
from seedx_jax.evaluation.image_tasks import image_tasks
from seedx_jax.evaluation.runner import EvalRun, Source, run_task
from seedx_jax.evaluation.tasks import Settings, Task, text_tasks
from seedx_jax.vision.anyres import COMPREHENSION_GRIDS

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from seedx_jax.pipelines import SeedX
    from seedx_jax.precision import Precision

TASKS: dict[str, Task] = {**text_tasks(), **image_tasks()}
DRAWING_TASKS = frozenset(image_tasks())  # the tasks that need the de-tokenizer


class EvalError(ValueError):
    """A request `evaluate` refuses; one line naming the input."""


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise EvalError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def make_settings(task: Task, source: Source, *, template: str | None = None, max_new_tokens: int | None = None,
                  grids: Sequence[str] | None = None, batch_size: int = 8, **rest) -> Settings:
    """The run's settings: the template given, else the source's own for the task, else the task's.

    Raises:
      EvalError: a template without the task's field, or a batch size that is not positive.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EvalError(f"batch_size={batch_size!r} must be a positive integer")
    if isinstance(grids, str):
        raise EvalError(f"grids={grids!r} is one string; pass a list such as ['1x1', '1x2']")
    try:
        chosen = task.check_template(template if template is not None
                                     else source.templates.get(task.name, task.template))
    except ValueError as err:
        raise EvalError(f"--template: {err}") from None
    names = {f.name for f in dataclasses.fields(RenderSettings)}
    render = RenderSettings(**{k: v for k, v in rest.items() if k in names})
    try:
        render.sampler  # noqa: B018 (its checks: steps, guidance scales, solver)
    except ValueError as err:
        field = str(err).split("=", 1)[0].removeprefix("SamplerConfig.").replace("num_steps", "steps")
        raise EvalError(f"--{field.replace('_', '-')}: {str(err).split('=', 1)[1]}") from None
    rest = {k: v for k, v in rest.items() if k not in names}
    if not rest.get("decode_batch_size"):
        rest["decode_batch_size"] = batch_size
    return Settings(template=chosen, max_new_tokens=max_new_tokens or task.max_new_tokens,
                    grids=tuple(grids or COMPREHENSION_GRIDS), batch_size=batch_size, render=render, **rest)


def evaluate(task: str, checkpoint: str, data: str, out: str, *, pipe: SeedX | None = None,
             images_dir: str | None = None, annotations: str | None = None, tfds_data_dir: str | None = None,
             overwrite: bool = False, quiet: bool = False, mesh: Mesh | None = None,
             precision: Precision | None = None, **settings) -> dict:
    """Evaluate the pipeline at `checkpoint` (or the loaded `pipe`, recorded as `checkpoint`) on `task`
    over `data`, into the folder `out` (resumed when it holds the same run) -> the metrics JSON.

    `settings`: `Settings` fields (template, max_new_tokens, grids, batch_size, decode_batch_size,
    likelihood_template) and `RenderSettings` fields (seed, height, width, steps, guidance_scale,
    image_guidance_scale, solver).

    Raises:
      EvalError, SourceFormatError, TfdsError, FileNotFoundError: the task, settings or data source;
      CheckpointError: not a pipeline, or one without the parts the task needs;
      OutputError: `out` cannot be written (see `seedx_jax.evaluation.runner.EvalRun`);
      NonFiniteError: NaN/Inf features or images.
    """
    spec = get_task(task)
    source = open_data(task, data, images_dir=images_dir, annotations=annotations, tfds_data_dir=tfds_data_dir)
    if not source.items:
        first = f" (first: {source.problems[0]})" if source.problems else ""
        raise EvalError(f"--data {data}: no {task} item to evaluate; {len(source.problems)} record(s) skipped{first}")
    known = {f.name for f in dataclasses.fields(Settings)} | {f.name for f in dataclasses.fields(RenderSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"evaluate() got unknown settings {unknown}")
    run_settings = make_settings(spec, source, **settings)
    if pipe is None:
        from seedx_jax.pipelines import SeedX

        pipe = SeedX.open(checkpoint)
    if spec.name in DRAWING_TASKS:  # the de-tokenizer the task needs, the image size
        try:
            pipe.check_render(run_settings.render.height, run_settings.render.width, None,
                              edits={"t2i": False, "edit": True}.get(spec.name))
        except CheckpointError:
            raise
        except ValueError as err:
            raise EvalError(f"--{str(err).split('=', 1)[0]}: {err}") from None
    try:
        pipe.check_max_new_tokens(run_settings.max_new_tokens, draws=spec.name in ("t2i", "edit"))
    except PromptError as err:
        raise EvalError(f"--max-new-tokens: {err}") from None
    recorded = dataclasses.asdict(run_settings)
    if spec.name not in DRAWING_TASKS:  # answers are greedy: the render settings play no part
        recorded.pop("render")
    run = EvalRun(out, {"task": task, "checkpoint": paths.real(checkpoint),
                        "data": _data_record(data, images_dir, annotations, tfds_data_dir),
                        "precision": _precision_record(precision), "settings": recorded},
                  inputs=[checkpoint, *data_inputs(data, images_dir, annotations)], overwrite=overwrite)
    try:
        pipe.load_weights(mesh=mesh, precision=precision, detokenizer=spec.name in DRAWING_TASKS)
        return run_task(spec, pipe, source, run, run_settings, quiet=quiet)
    except BaseException:  # a failed load, an interrupt before any prediction: no empty run folder left
        run.discard_if_empty()
        raise


def _data_record(data: str, images_dir: str | None, annotations: str | None, tfds_data_dir: str | None) -> dict:
    """Every input the items come from (a resumed run must read the same)."""
    if is_tfds(data):
        from seedx_jax.data.tfds_source import default_data_dir

        return {"source": data, "tfds_data_dir": paths.real(tfds_data_dir or default_data_dir())}
    return {"source": paths.real(data), "images": images_dir and paths.real(images_dir),
            "annotations": annotations and paths.real(annotations)}


def _precision_record(precision: Precision | None) -> dict:
    return {"compute_dtype": str(precision.compute_dtype) if precision else "float32",
            "llm_weights": precision.llm_weights if precision else "float"}
