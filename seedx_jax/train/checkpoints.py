"""Train checkpoints: an async Orbax CheckpointManager of the train state, the Grain data position and
a JSON record, under `<workdir>/checkpoints/<step>/`.

Orbax writes each step into a temporary directory and renames it when complete, so a half-written
checkpoint (a crash or kill mid-save) is never listed, and resume takes the newest complete one.
`keep` newest are kept, plus every step divisible by `keep_every`.
"""
from __future__ import annotations

import grain
import orbax.checkpoint as ocp

from seedx_jax.train import workdir as run_dir


class TrainCheckpoints:
    def __init__(self, workdir: str, *, keep: int, keep_every: int = 0, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, keep_period=keep_every or None, create=True,
                                               enable_async_checkpointing=async_save)
        self.directory = f"{run_dir.resolve(workdir).rstrip('/')}/checkpoints"
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state, data, record: dict) -> None:
        """Starts an async save (the device buffers are copied first, so training may go on)."""
        self._manager.save(step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data),
            record=ocp.args.JsonSave(record)))

    def restore(self, step: int, abstract_state, data) -> tuple[object, dict]:
        """(train state placed as `abstract_state`'s shardings, the JSON record); `data.set_state` is called."""
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data),
            record=ocp.args.JsonRestore()))
        return out.state, out.record

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
