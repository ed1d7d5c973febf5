"""seedx_jax checkpoints: one Orbax checkpoint per model plus a JSON manifest, and the directory the
pipelines load (a tokenizer folder + one checkpoint per component).

    <model dir>/manifest.json    {"format", "kind", "config", "seedx_jax_version"}
    <model dir>/state/           Orbax StandardCheckpointer of nnx.state(model)
    <pipeline dir>/seedx.json    {"format", "template"}
    <pipeline dir>/tokenizer/    tokenizer.model + added_tokens.json
    <pipeline dir>/{vit,agent,detokenizer}/   model dirs (detokenizer optional)

Writes go to a sibling temporary directory that is renamed into place when complete, so a failed
write never leaves a directory that looks like a checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator

from flax import nnx
from jax.sharding import Mesh

import seedx_jax
from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.sharding import Rules, abstract_model
from seedx_jax.vision.vit import QwenViT, VisionConfig

FORMAT = "seedx_jax/1"
MANIFEST = "manifest.json"
PIPELINE_MANIFEST = "seedx.json"
KINDS = {"vit": (VisionConfig, QwenViT), "agent": (AgentConfig, SeedXAgent),
         "detokenizer": (DetokenizerConfig, Detokenizer)}


class CheckpointError(ValueError):
    pass


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temporary sibling of `path`; on success it replaces `path`, on error it is removed."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the checkpoint from other users
    if os.path.exists(path):
        shutil.rmtree(path)
    os.rename(tmp, path)


def _kind_of(model: nnx.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise CheckpointError(f"cannot checkpoint a {type(model).__name__}; kinds: {sorted(KINDS)}")


def write_model(path: str, model: nnx.Module) -> None:
    """Manifest + Orbax state of `model` into the (new) directory `path`."""
    import orbax.checkpoint as ocp

    manifest = {"format": FORMAT, "kind": _kind_of(model), "config": model.config.to_dict(),
                "seedx_jax_version": seedx_jax.__version__}
    os.makedirs(path, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(path, "state"), nnx.state(model))
    checkpointer.wait_until_finished()
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def save_model(path: str, model: nnx.Module) -> None:
    with atomic_dir(path) as tmp:
        write_model(tmp, model)


def _read_json(path: str, name: str, what: str) -> dict:
    """`path/name` as a manifest of this format; errors name the directory and what it should be."""
    file = os.path.join(path, name)
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not os.path.isfile(file):
        raise CheckpointError(f"{path} is not a {what} (no {name})")
    with open(file) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r}, this seedx_jax reads {FORMAT!r}")
    return manifest


def read_manifest(path: str, kind: str | None = None) -> dict:
    manifest = _read_json(path, MANIFEST, "seedx_jax checkpoint")
    if kind is not None and manifest.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {manifest.get('kind')!r} checkpoint, expected {kind!r}")
    return manifest


def load_model(path: str, kind: str | None = None, *, mesh: Mesh | None = None,
               rules: Rules | None = None) -> nnx.Module:
    """The model saved at `path` (its config from the manifest; `kind` checks what it holds).

    With `mesh`, every parameter is restored straight into its sharding from the rules table, whatever
    the device count it was saved from; without, onto the default device.
    """
    import orbax.checkpoint as ocp

    manifest = read_manifest(path, kind)
    config_cls, model_cls = KINDS[manifest["kind"]]
    config = config_cls.from_dict(manifest["config"])

    def init():
        return model_cls(config, rngs=nnx.Rngs(0))

    if mesh is None:
        graphdef, abstract_state = nnx.split(nnx.eval_shape(init))
    else:
        graphdef, abstract_state = abstract_model(init, mesh, rules)
    try:
        state = ocp.StandardCheckpointer().restore(os.path.join(path, "state"), abstract_state)
    except Exception as e:  # TensorStore reports damaged data as a plain Exception
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot restore the {manifest['kind']} state ({first})") from e
    return nnx.merge(graphdef, state)


def save_pipeline(path: str, *, tokenizer, vit: QwenViT, agent: SeedXAgent, detokenizer: Detokenizer | None = None,
                  template: str = "seed_x_i") -> None:
    """Everything the `seedx-jax` commands load, written atomically into `path`."""
    with atomic_dir(path) as tmp:
        tokenizer.save(os.path.join(tmp, "tokenizer"))
        write_model(os.path.join(tmp, "vit"), vit)
        write_model(os.path.join(tmp, "agent"), agent)
        if detokenizer is not None:
            write_model(os.path.join(tmp, "detokenizer"), detokenizer)
        with open(os.path.join(tmp, PIPELINE_MANIFEST), "w") as f:
            json.dump({"format": FORMAT, "template": template}, f, indent=1)


def read_pipeline_manifest(path: str) -> dict:
    return _read_json(path, PIPELINE_MANIFEST, "seedx_jax pipeline checkpoint")
