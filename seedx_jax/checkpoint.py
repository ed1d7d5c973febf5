"""seedx_jax checkpoints: one Orbax checkpoint per model plus a JSON manifest, and the directory the
pipelines load (a tokenizer folder + one checkpoint per component).

    <model dir>/manifest.json    {"format", "kind", "config", "seedx_jax_version"[, "source"]}
    <model dir>/state/           Orbax PyTree checkpoint of nnx.state(model) as a pure dict
    <pipeline dir>/seedx.json    {"format", "template"[, "components": {part: relative dir}]}
    <pipeline dir>/tokenizer/    tokenizer.model + added_tokens.json
    <pipeline dir>/{vit,agent,detokenizer}/   model dirs (detokenizer optional)

`source` records where a converted checkpoint came from (file hashes, options, the load report);
`components` lets pipelines of one converted release share the tokenizer, ViT and de-tokenizers.

Writes follow the output policy of `seedx_jax.outputs`: built in a partial sibling and renamed into
place when complete (a failed write never leaves a directory that looks like a checkpoint), and an
existing target is replaced only when it is our own output of the same kind and `overwrite` is given.
Paths may be relative, start with `~`, end in a slash or go through symlinks (`seedx_jax.paths`);
a bucket URL is refused with the command that copies it.
"""
from __future__ import annotations

import json
import os

from flax import nnx
from jax.sharding import Mesh

from seedx_jax import paths
from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.exits import interrupts_deferred
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.outputs import FORMAT, MANIFEST, PIPELINE_MANIFEST, atomic_output, with_article, write_marker
from seedx_jax.sharding import Rules, abstract_model
from seedx_jax.vision.vit import QwenViT, VisionConfig

KINDS = {"vit": (VisionConfig, QwenViT), "llama": (LlamaConfig, LlamaForCausalLM),
         "agent": (AgentConfig, SeedXAgent), "detokenizer": (DetokenizerConfig, Detokenizer)}
PIPELINE_PARTS = ("tokenizer", "vit", "agent", "detokenizer")


class CheckpointError(ValueError):
    pass


def _kind_of(model: nnx.Module) -> str:
    for kind, (_, cls) in KINDS.items():
        if isinstance(model, cls):
            return kind
    raise CheckpointError(f"cannot checkpoint a {type(model).__name__}; kinds: {sorted(KINDS)}")


def write_manifest(path: str, kind: str, config, **extra) -> None:
    write_marker(path, kind, config=config.to_dict(), **extra)


def write_model(path: str, model: nnx.Module) -> None:
    """Manifest + Orbax state of `model` into the (new) directory `path`."""
    import orbax.checkpoint as ocp

    kind = _kind_of(model)
    os.makedirs(path, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    with interrupts_deferred():  # Orbax writes in its own threads: no cleanup while they write
        checkpointer.save(os.path.join(path, "state"), nnx.to_pure_dict(nnx.state(model)))
        checkpointer.wait_until_finished()
    write_manifest(path, kind, model.config)


def save_model(path: str, model: nnx.Module, *, overwrite: bool = False) -> None:
    """`model` as a checkpoint directory `path`; an existing checkpoint of the same kind there is
    replaced only with `overwrite` (anything else there is never replaced: `OutputError`)."""
    with atomic_output(path, _kind_of(model), overwrite=overwrite, name="save_model path") as tmp:
        write_model(tmp, model)


def _read_json(path: str, name: str, what: str) -> dict:
    """`path/name` as a manifest of this format; errors name the directory and what it should be."""
    if paths.is_url(path):
        raise CheckpointError(f"{path}: checkpoints are read from local or mounted folders; copy it first "
                              f"(e.g. `gcloud storage cp -r {path} .`)")
    file = os.path.join(path, name)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"{paths.display(path)} is a file, not a checkpoint directory")
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not os.path.isfile(file):
        raise CheckpointError(f"{path} is not a {what} (no {name})")
    try:
        with open(file) as f:
            manifest = json.load(f)
    except ValueError as err:
        raise CheckpointError(f"{path}: {name} is not valid JSON ({err})") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise CheckpointError(f"{path}: format {found!r} in {name}, this seedx_jax reads {FORMAT!r}")
    return manifest


def read_manifest(path: str, kind: str | None = None) -> dict:
    """The manifest of the model checkpoint at `path` (a path as typed).

    Raises:
      CheckpointError: no checkpoint there, another format, another kind than `kind`, or a seedx_jax
        output that is not a model (a tokenizer, an export, ...).
    """
    manifest = _read_json(paths.resolve(path), MANIFEST, "seedx_jax checkpoint")
    if manifest.get("kind") not in KINDS:
        raise CheckpointError(f"{path} holds a seedx_jax {manifest.get('kind')} output, not a model checkpoint "
                              f"({', '.join(KINDS)})")
    if kind is not None and manifest.get("kind") != kind:
        found = with_article(repr(manifest.get("kind")))
        raise CheckpointError(f"{path} holds {found} checkpoint, expected {kind!r}")
    return manifest


def load_model(path: str, kind: str | None = None, *, mesh: Mesh | None = None,
               rules: Rules | None = None) -> nnx.Module:
    """The model saved at `path` (its config from the manifest; `kind` checks what it holds).

    With `mesh`, every parameter is restored straight into its sharding from the rules table, whatever
    the device count it was saved from; without, onto the default device (also inside an active mesh
    context).
    """
    import orbax.checkpoint as ocp

    path = paths.resolve(path)  # Orbax takes absolute paths only
    manifest = read_manifest(path, kind)
    config_cls, model_cls = KINDS[manifest["kind"]]
    config = config_cls.from_dict(manifest["config"])

    def init():
        return model_cls(config, rngs=nnx.Rngs(0))

    graphdef, abstract_state = abstract_model(init, mesh, rules)
    try:
        restored = ocp.StandardCheckpointer().restore(os.path.join(path, "state"), nnx.to_pure_dict(abstract_state))
        nnx.replace_by_pure_dict(abstract_state, restored)
    except Exception as e:  # TensorStore reports damaged data as a plain Exception
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot restore the {manifest['kind']} state ({first})") from e
    return nnx.merge(graphdef, abstract_state)


def save_pipeline(path: str, *, tokenizer, vit: QwenViT, agent: SeedXAgent, detokenizer: Detokenizer | None = None,
                  template: str = "seed_x_i", overwrite: bool = False) -> None:
    """Everything the `seedx-jax` commands load, written atomically into `path`; an existing pipeline
    there is replaced only with `overwrite` (anything else never: `OutputError`)."""
    with atomic_output(path, "pipeline", overwrite=overwrite, name="save_pipeline path") as tmp:
        tokenizer.save(os.path.join(tmp, "tokenizer"))
        write_model(os.path.join(tmp, "vit"), vit)
        write_model(os.path.join(tmp, "agent"), agent)
        if detokenizer is not None:
            write_model(os.path.join(tmp, "detokenizer"), detokenizer)
        write_pipeline_manifest(tmp, template)


def read_pipeline_manifest(path: str) -> dict:
    return _read_json(paths.resolve(path), PIPELINE_MANIFEST, "seedx_jax pipeline checkpoint")


def write_pipeline_manifest(path: str, template: str, components: dict[str, str] | None = None) -> None:
    manifest = {"format": FORMAT, "template": template}
    if components:
        manifest["components"] = components
    with open(os.path.join(path, PIPELINE_MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def pipeline_component(path: str, manifest: dict, part: str) -> str:
    """Directory of one part of the pipeline at `path` (its own sub-directory unless shared). Shared
    parts (`../vit`) are found from where the pipeline really is, so a symlink to it works."""
    relative = manifest.get("components", {}).get(part, part)
    return os.path.normpath(os.path.join(paths.real(path), relative))
