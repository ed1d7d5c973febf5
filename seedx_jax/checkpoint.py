"""seedx_jax checkpoints: one Orbax checkpoint per model plus a JSON manifest, and the directory the
pipelines load (a tokenizer folder + one checkpoint per component).

    <model dir>/manifest.json    {"format", "kind", "config", "seedx_jax_version"[, "source"]}
    <model dir>/state/           Orbax PyTree checkpoint of nnx.state(model) as a pure dict
    <pipeline dir>/seedx.json    {"format", "template"[, "components": {part: relative dir}]}
    <pipeline dir>/tokenizer/    tokenizer.model + added_tokens.json
    <pipeline dir>/{vit,agent,detokenizer}/   model dirs (detokenizer optional)

`source` records where a converted checkpoint came from (file hashes, options, the load report);
`components` lets pipelines of one converted release share the tokenizer, ViT and de-tokenizers.

Writes go to a sibling temporary directory that is renamed into place when complete, so a failed
write never leaves a directory that looks like a checkpoint.
"""
from __future__ import annotations

import contextlib
import glob
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
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.sharding import Rules, abstract_model
from seedx_jax.vision.vit import QwenViT, VisionConfig

FORMAT = "seedx_jax/1"
MANIFEST = "manifest.json"
PIPELINE_MANIFEST = "seedx.json"
KINDS = {"vit": (VisionConfig, QwenViT), "llama": (LlamaConfig, LlamaForCausalLM),
         "agent": (AgentConfig, SeedXAgent), "detokenizer": (DetokenizerConfig, Detokenizer)}
PIPELINE_PARTS = ("tokenizer", "vit", "agent", "detokenizer")


class CheckpointError(ValueError):
    pass


@contextlib.contextmanager
def atomic_dir(path: str, *, create: bool = True) -> Iterator[str]:
    """Yield a temporary sibling of `path` (created, or only named when `create` is False); on success
    it replaces `path`, on error or interrupt it is removed."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    # not a hidden name: Orbax partial saves glob for their pending directories beside it
    tmp = tempfile.mkdtemp(prefix=f"{os.path.basename(path)}.partial-", dir=parent)
    if not create:
        os.rmdir(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for leftover in glob.glob(tmp + ".partial_save*"):  # Orbax partial-save sessions
            shutil.rmtree(leftover, ignore_errors=True)
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


def write_manifest(path: str, kind: str, config, **extra) -> None:
    manifest = {"format": FORMAT, "kind": kind, "config": config.to_dict(),
                "seedx_jax_version": seedx_jax.__version__, **extra}
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def write_model(path: str, model: nnx.Module) -> None:
    """Manifest + Orbax state of `model` into the (new) directory `path`."""
    import orbax.checkpoint as ocp

    kind = _kind_of(model)
    os.makedirs(path, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(path, "state"), nnx.to_pure_dict(nnx.state(model)))
    checkpointer.wait_until_finished()
    write_manifest(path, kind, model.config)


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
        restored = ocp.StandardCheckpointer().restore(os.path.join(path, "state"), nnx.to_pure_dict(abstract_state))
        nnx.replace_by_pure_dict(abstract_state, restored)
    except Exception as e:  # TensorStore reports damaged data as a plain Exception
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot restore the {manifest['kind']} state ({first})") from e
    return nnx.merge(graphdef, abstract_state)


def save_pipeline(path: str, *, tokenizer, vit: QwenViT, agent: SeedXAgent, detokenizer: Detokenizer | None = None,
                  template: str = "seed_x_i") -> None:
    """Everything the `seedx-jax` commands load, written atomically into `path`."""
    with atomic_dir(path) as tmp:
        tokenizer.save(os.path.join(tmp, "tokenizer"))
        write_model(os.path.join(tmp, "vit"), vit)
        write_model(os.path.join(tmp, "agent"), agent)
        if detokenizer is not None:
            write_model(os.path.join(tmp, "detokenizer"), detokenizer)
        write_pipeline_manifest(tmp, template)


def read_pipeline_manifest(path: str) -> dict:
    return _read_json(path, PIPELINE_MANIFEST, "seedx_jax pipeline checkpoint")


def write_pipeline_manifest(path: str, template: str, components: dict[str, str] | None = None) -> None:
    manifest = {"format": FORMAT, "template": template}
    if components:
        manifest["components"] = components
    with open(os.path.join(path, PIPELINE_MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def pipeline_component(path: str, manifest: dict, part: str) -> str:
    """Directory of one part of the pipeline at `path` (its own sub-directory unless shared)."""
    return os.path.normpath(os.path.join(path, manifest.get("components", {}).get(part, part)))
