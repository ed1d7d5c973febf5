"""Grain input pipelines: a deterministic global order, preprocessing in Grain (worker processes when
`workers > 0`), per-process shards of every global batch, skip-and-report of bad samples, and an
iterator state that Orbax saves with the train state.

Order: epoch e visits the source in the permutation `default_rng([seed, e])`; the global stream is cut
into global batches of `processes x per_process` examples and process p takes block p of each. So the
examples of a global batch do not depend on how many processes read them, and a process's position
in its stream (the Grain iterator state) is all that resume needs.

Mixtures (SEED-X configs/data/*.yaml): each optimizer step draws ONE source by weight with `default_rng([seed, step])`
and takes all its micro-batches from it. SEED-X draws per micro-batch; per step keeps one shape per
compiled step (sources differ in max_length and micro-batch size).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Callable, Sequence

import grain
import numpy as np

from seedx_jax.data.examples import Skip

log = logging.getLogger("seedx_jax.data")
_STREAM_LENGTH = 2 ** 40  # the order repeats epochs without end; the trainer stops at its step count


class GlobalOrder:
    """Local position j of process p -> (global position, record index)."""

    def __init__(self, num_records: int, seed: int, process_index: int, process_count: int, per_process: int):
        if num_records == 0:
            raise ValueError("the data source is empty")
        self.n, self.seed = num_records, seed
        self.p, self.P, self.per = process_index, process_count, per_process
        self._epoch, self._perm = -1, None

    def global_position(self, j: int) -> int:
        return (j // self.per) * (self.P * self.per) + self.p * self.per + j % self.per

    def __call__(self, j: int) -> tuple[int, int]:
        g = self.global_position(j)
        epoch = g // self.n
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return g, int(self._perm[g % self.n])


class DataError(RuntimeError):
    """A data source that cannot feed training (e.g. every sample is skipped)."""


@dataclasses.dataclass(frozen=True)
class _Example:
    """Local position -> built example (a picklable callable, for Grain's worker processes)."""

    order: GlobalOrder
    reader: object
    build: Callable

    def __call__(self, j: int):
        g, index = self.order(j)
        return self.build(self.reader[index], (self.order.seed * 1_000_003 + g) % 2 ** 31)


@dataclasses.dataclass
class SourceStats:
    examples: int = 0
    skipped: int = 0


class ExampleStream:
    """This process's examples of one source, in order, with bad samples skipped and counted.

    `next_batch(n)` -> dict of stacked arrays `[n, ...]`. `get_state()/set_state()` cover the Grain
    iterator position and the counters.
    """

    def __init__(self, name: str, reader, build: Callable, *, seed: int, per_process: int,
                 process_index: int = 0, process_count: int = 1, workers: int = 0, report: Callable = None):
        self.name, self.stats = name, SourceStats()
        self._all_bad_after = len(reader)  # consecutive skips that mean no sample of the source is usable
        self._report = report or (lambda name, skip: log.warning("skipped %s: %s", skip.location, skip.reason))
        order = GlobalOrder(len(reader), seed, process_index, process_count, per_process)
        ds = grain.MapDataset.range(_STREAM_LENGTH).map(_Example(order, reader, build)).to_iter_dataset(
            grain.ReadOptions(num_threads=1 if workers else 2, prefetch_buffer_size=4 * per_process))
        if workers:
            from absl import flags

            if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (set when not run by absl.app)
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
        self._iter = iter(ds)

    def next_batch(self, n: int) -> dict[str, np.ndarray]:
        rows, consecutive = [], 0
        while len(rows) < n:
            item = next(self._iter)
            if isinstance(item, Skip):
                self.stats.skipped += 1
                consecutive += 1
                self._report(self.name, item)
                if consecutive >= self._all_bad_after:
                    raise DataError(f"data source {self.name}: {consecutive} samples in a row were skipped, none is "
                                     f"usable (last: {item.location}: {item.reason})")
                continue
            consecutive = 0
            rows.append(item)
        self.stats.examples += n
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def get_state(self) -> dict:
        return {"iterator": self._iter.get_state(), **dataclasses.asdict(self.stats)}

    def set_state(self, state: dict) -> None:
        self._iter.set_state(state["iterator"])
        self.stats = SourceStats(state["examples"], state["skipped"])


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    name: str
    weight: float
    micro_batch: int  # global rows per micro-batch


class Mixture:
    """Batches `[A, micro, ...]` (this process's rows) for each optimizer step, one source per step.

    Also the object Grain's Orbax handler saves: `get_state()` is JSON bytes of every stream's state.
    """

    def __init__(self, streams: Sequence[ExampleStream], specs: Sequence[SourceSpec], *, seed: int, accumulation: int,
                 process_count: int = 1):
        self.streams = {s.name: s for s in streams}
        self.specs = list(specs)
        weights = np.asarray([s.weight for s in specs], np.float64)
        if (weights <= 0).any():
            raise ValueError(f"data source weights must be positive, got {weights.tolist()}")
        self.probs = weights / weights.sum()
        self.seed, self.accumulation, self.P = seed, accumulation, process_count

    def source_for(self, step: int) -> SourceSpec:
        if len(self.specs) == 1:
            return self.specs[0]
        return self.specs[int(np.random.default_rng([self.seed, step]).choice(len(self.specs), p=self.probs))]

    def batch_for(self, step: int) -> tuple[str, dict[str, np.ndarray]]:
        spec = self.source_for(step)
        stream = self.streams[spec.name]
        micro = [stream.next_batch(spec.micro_batch // self.P) for _ in range(self.accumulation)]
        return spec.name, {k: np.stack([m[k] for m in micro]) for k in micro[0]}

    def stats(self) -> dict[str, SourceStats]:
        return {name: s.stats for name, s in self.streams.items()}

    # Grain's Orbax CheckpointHandler protocol (bytes state for non-DatasetIterator items)
    def get_state(self) -> bytes:
        return json.dumps({name: s.get_state() for name, s in self.streams.items()}).encode()

    def set_state(self, state: bytes) -> None:
        states = json.loads(state)
        missing = sorted(set(self.streams) - set(states))
        if missing:
            raise ValueError(f"the checkpoint's data state has no sources {missing} (it has {sorted(states)})")
        for name, s in self.streams.items():
            s.set_state(states[name])

    def start_prefetch(self) -> None:
        """Called by Grain's handler after a restore; the streams prefetch on their own."""
