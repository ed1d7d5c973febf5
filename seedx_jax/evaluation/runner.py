"""A resumable evaluation run: the output folder, the predictions file, the loop, the metrics JSON.

The folder (`--out`) holds `manifest.json` (the task, checkpoint, data and settings of the run),
`predictions.jsonl` (one JSON object per item, appended as chunks of `batch_size` items finish),
`images/` (tasks that draw) and, at the end, `metrics.json`. Rerunning the same command resumes: the
items whose predictions are in the file are skipped (a line cut off by a kill is dropped and its chunk
redone), so a run killed midway and rerun writes the same metrics JSON as an uninterrupted one, and no
item is predicted twice. Another task, checkpoint, data source or setting is refused unless
`overwrite` (which replaces only an evaluation folder of ours; a folder we did not write never).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import TYPE_CHECKING, Iterator

from tqdm import tqdm

from seedx_jax import paths
from seedx_jax.evaluation.items import Item, Problem, problem_summary
from seedx_jax.evaluation.tasks import RunContext, Settings, Task
from seedx_jax.outputs import MANIFEST, OutputError, check_target, output_kind, write_marker
from seedx_jax.exits import raise_if_interrupted

if TYPE_CHECKING:
    from seedx_jax.pipelines import SeedX

KIND = "evaluation"
PREDICTIONS = "predictions.jsonl"


@dataclasses.dataclass
class Source:
    """A data source's records in order: items to evaluate and problems (skipped, reported)."""

    records: list[Item | Problem]
    templates: dict[str, str] = dataclasses.field(default_factory=dict)  # the source's own task templates

    def __post_init__(self):
        seen: dict[str, str] = {}
        for k, record in enumerate(self.records):
            if isinstance(record, Item):
                if record.id in seen:
                    self.records[k] = Problem(record.location, f"duplicate id ({record.id!r}; first at {seen[record.id]})")
                else:
                    seen[record.id] = record.location

    @property
    def items(self) -> list[Item]:
        return [r for r in self.records if isinstance(r, Item)]

    @property
    def problems(self) -> list[Problem]:
        return [r for r in self.records if isinstance(r, Problem)]


class EvalRun:
    """The output folder of one evaluation: created, or resumed when it holds the same run."""

    def __init__(self, out: str, run: dict, *, inputs: list[str], overwrite: bool = False):
        """Raises OutputError: the folder is not ours, holds another run (without `overwrite`), or is, holds
        or lies inside an input."""
        self.run = json.loads(json.dumps(run))  # as it reads back from the manifest
        target = paths.resolve(out)
        self.resumed = False
        if output_kind(target) == KIND:
            check_target(out, KIND, inputs=inputs, overwrite=True)  # the input overlaps, on every rerun
            with open(os.path.join(target, MANIFEST)) as f:
                previous = json.load(f).get("run")
            if previous == self.run:
                self.resumed = True
            elif not overwrite:
                changed = _changed(previous, self.run) if isinstance(previous, dict) else ["its manifest holds no run"]
                raise OutputError(f"--out {out} holds an evaluation with other settings ({', '.join(changed)}); pass "
                                  "--overwrite to replace it, or choose another folder")
            else:
                _remove_ours(target)
        else:
            check_target(out, KIND, inputs=inputs, overwrite=overwrite)
        self.path = target
        self.created = not os.path.isdir(target)
        if not self.resumed:
            try:
                os.makedirs(target, exist_ok=True)
                write_marker(target, KIND, run=self.run)
            except OSError as err:
                raise OutputError(f"--out {out}: cannot write there ({err.strerror})") from None

    def discard_if_empty(self) -> None:
        """After a run that stopped before its first prediction: remove the folder if this run made it."""
        if self.created and not os.path.exists(self.predictions_file):
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def predictions_file(self) -> str:
        return os.path.join(self.path, PREDICTIONS)

    def predictions(self, task: Task) -> dict[str, dict]:
        """The complete predictions written so far, by id; a last line cut off by a kill is removed from the
        file; a line that is not a complete prediction of `task` (an edited file) is ignored, and its item
        predicted again."""
        if not os.path.isfile(self.predictions_file):
            return {}
        with open(self.predictions_file, "rb") as f:
            data = f.read()
        complete = data[:data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(self.predictions_file, "r+b") as f:
                f.truncate(len(complete))
        done = {}
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not ours (an edited file): the item is predicted again
            if isinstance(record, dict) and isinstance(record.get("id"), str) and task.complete(record):
                done.setdefault(record["id"], record)
        return done

    def append(self, records: list[dict]) -> None:
        """Whole lines, flushed to disk: a kill leaves at most one cut-off line."""
        with open(self.predictions_file, "a") as f:
            f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())

    def write_metrics(self, metrics: dict) -> str:
        path = os.path.join(self.path, "metrics.json")
        with open(path + ".tmp", "w") as f:
            json.dump(_json_safe(metrics), f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)
        return path


def _changed(previous: dict, run: dict, prefix: str = "") -> list[str]:
    """The dotted names of the values that differ between two runs' records."""
    out = []
    for key in sorted(set(previous) | set(run)):
        a, b = previous.get(key), run.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return out


def _remove_ours(folder: str) -> None:
    """What an evaluation writes, and nothing else a user put beside it."""
    for name in (MANIFEST, PREDICTIONS, "metrics.json", "metrics.json.tmp"):
        if os.path.isfile(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    shutil.rmtree(os.path.join(folder, "images"), ignore_errors=True)


def _json_safe(value):
    """NaN (nothing to score) -> null, so the file is strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def chunks(items: list[Item], size: int) -> Iterator[tuple[int, list[Item]]]:
    """(position of the first item, the items) in fixed chunks of `size`: the unit of batching, of the
    render seed and of resumption, fixed by the item order alone."""
    for start in range(0, len(items), size):
        yield start, items[start:start + size]


def run_task(task: Task, pipe: SeedX, source: Source, run: EvalRun, settings: Settings, *,
             quiet: bool = False) -> dict:
    """Predict every item without a prediction, then score them all -> the metrics (also written)."""
    items = source.items
    ordinals = {r.id: k for k, r in enumerate(source.records) if isinstance(r, Item)}
    done = run.predictions(task)
    with tqdm(total=len(items), initial=sum(i.id in done for i in items), unit="item", desc=task.name,
              disable=quiet, dynamic_ncols=True, smoothing=0.1) as bar:
        for start, chunk in chunks(items, settings.batch_size):
            if all(item.id in done for item in chunk):
                continue
            raise_if_interrupted()
            records = task.predict(pipe, chunk, settings, RunContext(run.path, start, ordinals))
            new = [r for r in records if r["id"] not in done]
            run.append(new)
            done.update((r["id"], r) for r in new)
            bar.update(len(new))
    return write_metrics(task, source, run, done)


def write_metrics(task: Task, source: Source, run: EvalRun, done: dict[str, dict]) -> dict:
    by_id = {item.id: item for item in source.items}
    predictions = [done[i] for i in by_id if i in done]
    scored = [p for p in predictions if "problem" not in p]
    problems = source.problems + [Problem(by_id[p["id"]].location, p["problem"]) for p in predictions
                                  if "problem" in p]
    metrics = {"task": task.name, "checkpoint": run.run["checkpoint"], "data": run.run["data"]["source"],
               "records": len(by_id) + len(source.problems), "evaluated": len(scored),
               "metrics": task.score(by_id, scored) if scored else {}, "skipped": problem_summary(problems)}
    run.write_metrics(metrics)
    return metrics
