"""Train checkpoints: an async Orbax CheckpointManager of the train state, the Grain data position and
a JSON record, under `<workdir>/checkpoints/<step>/`.

Orbax writes each step into a temporary directory and renames it when complete, so a half-written
checkpoint (a crash or kill mid-save) is never listed, and resume takes the newest complete one.
`keep` newest are kept, plus every step divisible by `keep_every`. `difference` compares a checkpoint's
stored shapes with the state a config builds, before any restore: Orbax reports a mismatch only from
inside its restore threads, as a flood of tracebacks.
"""
from __future__ import annotations

import grain
import orbax.checkpoint as ocp
from etils import epath

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

    def difference(self, step: int, abstract_state) -> str | None:
        """The first difference between the train state stored at `step` and `abstract_state`, parameters
        before optimizer state (`parameter agent/llm/norm/scale has (2, 64) float32 in checkpoint 4, (3, 64)
        float32 in this config`); None when every path, shape and dtype agree."""
        stored = ocp.tree.to_flat_dict(ocp.StandardCheckpointHandler().metadata(
            epath.Path(f"{self.directory}/{step}/state")).tree)
        wanted = ocp.tree.to_flat_dict(ocp.tree.serialize_tree(abstract_state, keep_empty_nodes=True))
        paths = sorted(list(wanted) + [p for p in stored if p not in wanted], key=lambda p: p[0] != "params")
        for path in paths:
            have, want = (_shape_dtype(tree.get(path)) for tree in (stored, wanted))
            if have != want:
                if have and want:
                    return f"{_name(path)} has {have} in checkpoint {step}, {want} in this config"
                where = f"checkpoint {step}, not in this config" if have else f"this config, not in checkpoint {step}"
                return f"{_name(path)} is in {where}"
        return None

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


def _shape_dtype(leaf) -> str | None:
    if leaf is None:
        return None
    return f"{tuple(leaf.shape)} {leaf.dtype}" if hasattr(leaf, "shape") else type(leaf).__name__


def _name(path: tuple[str, ...]) -> str:
    """`parameter agent/llm/layers/mlp/gate_proj/kernel` (nnx keeps a Variable's array under `value`)."""
    parts = [p for p in path if p != "value"]
    return f"parameter {'/'.join(parts[1:])}" if parts[0] == "params" else "/".join(parts)
