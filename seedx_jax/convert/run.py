"""Conversions that write checkpoints: one artefact, the tokenizer, or a whole release tree.

Every output appears atomically (built in a temporary sibling, renamed when complete); a failure or
an interrupt leaves nothing that looks like a checkpoint.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os

import jax
from flax import nnx
from jax.sharding import Mesh

import seedx_jax
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import FORMAT, KINDS, atomic_dir, write_manifest, write_pipeline_manifest
from seedx_jax.convert.artefacts import (MODELS, Artefact, ArtefactError, agent_artefact, detokenizer_artefact,
                                         find_release, vit_artefact)
from seedx_jax.convert.stream import write_converted
from seedx_jax.progress import Progress
from seedx_jax.sharding import Rules
from seedx_jax.sources import file_digest
from seedx_jax.weights import LoadReport

RELEASE_MANIFEST = "release.json"


@dataclasses.dataclass
class Options:
    """How every model of one conversion is written."""

    mesh: Mesh | None = None
    rules: Rules | None = None
    strict: bool = False
    flush_bytes: int = 128 << 20
    hash_sources: bool = True
    progress: Progress = dataclasses.field(default_factory=lambda: Progress(quiet=True))


def _digests(files: list[str]) -> dict[str, dict]:
    return {os.path.abspath(f): {"bytes": os.path.getsize(f), "sha256": file_digest(f).split(":", 1)[1]}
            for f in dict.fromkeys(files)}


def _source_dtypes(source, report: LoadReport) -> dict:
    """The loaded tensors' dtypes (the most common one + exceptions): export writes them back so."""
    dtypes = {k: str(source.dtype(k)) for k in report.loaded}
    if not dtypes:
        return {}
    default = collections.Counter(dtypes.values()).most_common(1)[0][0]
    return {"default": default, "exceptions": {k: d for k, d in dtypes.items() if d != default}}


def _single_process() -> None:
    if jax.process_count() > 1:  # the atomic renames and manifests are not coordinated across hosts
        raise ArtefactError(f"conversion runs in one process ({jax.process_count()} here): convert on one host, "
                            "then load_model(dir, mesh=...) on every host of the pod")


def write_artefact(path: str, artefact: Artefact, options: Options) -> LoadReport:
    """Convert `artefact` into the model directory `path` (which must not exist yet)."""
    _single_process()
    model_cls = KINDS[artefact.kind][1]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # hashing reads files while conversion waits on devices
        hashes = pool.submit(_digests, artefact.source.files()) if options.hash_sources else None
        report = write_converted(path, lambda: model_cls(artefact.config, rngs=nnx.Rngs(0)), artefact.source,
                                 artefact.table, mesh=options.mesh, rules=options.rules, strict=options.strict,
                                 allow_missing=artefact.allow_missing, flush_bytes=options.flush_bytes,
                                 progress=options.progress)
        files = hashes.result() if hashes else {os.path.abspath(f): {} for f in artefact.source.files()}
    source = {"files": files, "options": artefact.options, "dtypes": _source_dtypes(artefact.source, report),
              "report": {"summary": report.summary(), "merged_lora_keys": len(artefact.merged),
                         "ignored": report.ignored, "unmatched": report.unmatched}}
    write_manifest(path, artefact.kind, artefact.config, source=source)
    return report


def convert_artefact(out: str, artefact: Artefact, options: Options | None = None) -> LoadReport:
    with atomic_dir(out, create=False) as tmp:
        return write_artefact(tmp, artefact, options or Options())


def write_tokenizer(path: str, folder: str) -> SeedXTokenizer:
    tokenizer = SeedXTokenizer.from_dir(folder)  # checks the 330 added tokens
    tokenizer.save(path)
    return tokenizer


def convert_tokenizer(out: str, folder: str) -> None:
    with atomic_dir(out) as tmp:
        write_tokenizer(tmp, folder)


def convert_release(root: str, out: str, *, configs: dict[str, str] | None = None, dtype: str | None = None,
                    merge_lora: bool = False, lora_alpha: float | None = None,
                    options: Options | None = None) -> dict[str, LoadReport]:
    """A whole SEED-X release tree -> `out`: shared `tokenizer/`, `vit/`, `detokenizer_stage{1,2}/`, and
    one pipeline directory per model (`seed_x/`, `seed_x_i/`, `seed_x_edit/`) that `SeedX.load` and
    the `seedx-jax` commands read. Returns the load report of every model."""
    options, configs = options or Options(), configs or {}
    _single_process()
    release = find_release(root)
    if release.detokenizers and release.sdxl is None:
        raise ArtefactError(f"{root}: the de-tokenizer checkpoints need stable-diffusion-xl-base-1.0/ beside them")
    progress, reports = options.progress, {}
    with atomic_dir(out) as tmp:
        with progress.stage("tokenizer"):
            write_tokenizer(os.path.join(tmp, "tokenizer"), release.tokenizer)
        jobs = [("vit", lambda: vit_artefact(release.vit, config=configs.get("vit"), dtype=dtype))]
        for stage, file in sorted(release.detokenizers.items()):
            jobs.append((f"detokenizer_stage{stage}", lambda file=file: detokenizer_artefact(
                file, release.sdxl, config=configs.get("detokenizer"), dtype=dtype)))
        for name, (agent, llm) in release.models.items():
            jobs.append((f"{name}/agent", lambda agent=agent, llm=llm: agent_artefact(
                agent, llm, config=configs.get("agent"), dtype=dtype, merge_lora=merge_lora, lora_alpha=lora_alpha)))
        for target, make in jobs:
            with progress.stage(target):
                reports[target] = write_artefact(os.path.join(tmp, target), make(), options)
        for name in release.models:
            template, stage = MODELS[name]
            components = {"tokenizer": "../tokenizer", "vit": "../vit"}
            if stage in release.detokenizers:
                components["detokenizer"] = f"../detokenizer_stage{stage}"
            write_pipeline_manifest(os.path.join(tmp, name), template, components)
        with open(os.path.join(tmp, RELEASE_MANIFEST), "w") as f:
            json.dump({"format": FORMAT, "release": os.path.abspath(root), "pipelines": sorted(release.models),
                       "models": {k: r.summary() for k, r in reports.items()},
                       "seedx_jax_version": seedx_jax.__version__}, f, indent=1)
    return reports
