"""Conversions that write checkpoints: one artefact, the tokenizer, or a whole release tree.

Outputs follow `seedx_jax.outputs`: each appears atomically (built in a partial sibling, renamed when
complete), a failure or an interrupt leaves nothing that looks like a checkpoint, an existing output
is replaced only when it is an earlier conversion of the same kind and `overwrite` is set, and an
output may never be, contain or lie inside its sources.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import threading

import jax
from flax import nnx
from jax.sharding import Mesh

import seedx_jax
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import KINDS, write_manifest, write_pipeline_manifest
from seedx_jax.convert.artefacts import (MODELS, Artefact, ArtefactError, agent_artefact, detokenizer_artefact,
                                         find_release, vit_artefact)
from seedx_jax.convert.stream import plan_converted, write_converted
from seedx_jax.outputs import FORMAT, RELEASE_MANIFEST, atomic_output, write_marker
from seedx_jax.progress import Progress
from seedx_jax.sharding import Rules
from seedx_jax.sources import SourceError, verify_file
from seedx_jax.weights import LoadReport

@dataclasses.dataclass
class Options:
    """How every model of one conversion is written."""

    mesh: Mesh | None = None
    rules: Rules | None = None
    strict: bool = False
    flush_bytes: int = 128 << 20
    hash_sources: bool = True
    allow_nonfinite: bool = False  # convert source tensors holding NaN/Inf (listed in the report) instead of failing
    progress: Progress = dataclasses.field(default_factory=lambda: Progress(quiet=True))


def _verified(files: list[str], digest: bool, stop: threading.Event) -> dict[str, dict]:
    """Each source file read once (`verify_file`): zip members' CRC-32s checked, and with `digest` its
    size and SHA-256 recorded -> {absolute path: {"bytes", "sha256"} or {}}; cut short when `stop` is set.

    Raises SourceError naming the first damaged file and member."""
    out = {}
    for f in dict.fromkeys(files):
        sha = verify_file(f, digest=digest, stop=stop)
        if stop.is_set():
            break
        out[os.path.abspath(f)] = {"bytes": os.path.getsize(f), "sha256": sha.split(":", 1)[1]} if digest else {}
    return out


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
    stop = threading.Event()
    # The sources are read for their digests and CRCs while the conversion waits on the devices.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        verified = pool.submit(_verified, artefact.source.files(), options.hash_sources, stop)

        def damaged() -> None:  # between units: a damaged file stops the conversion as soon as it is seen
            if verified.done() and verified.exception() is not None:
                raise verified.exception()

        try:
            try:
                report = write_converted(path, lambda: model_cls(artefact.config, rngs=nnx.Rngs(0)),
                                         artefact.source, artefact.table, mesh=options.mesh, rules=options.rules,
                                         strict=options.strict, allow_missing=artefact.allow_missing,
                                         flush_bytes=options.flush_bytes, allow_nonfinite=options.allow_nonfinite,
                                         check=damaged, progress=options.progress)
            except SourceError:
                # NaNs or an unreadable tensor may be a damaged file's garbage: its CRC error, the cause with
                # another fix (download again, not --allow-nonfinite), is what is reported when there is one.
                # Only the zip files are read for it, not every source hashed.
                stop.set()
                for f in dict.fromkeys(artefact.source.files()):
                    verify_file(f, digest=False)
                raise
            files = verified.result()  # raises for a damage seen after the last unit was converted
        except BaseException:
            stop.set()  # the reading thread ends at its next block, not after every file
            raise
    source = {"files": files, "options": artefact.options, "dtypes": _source_dtypes(artefact.source, report),
              "report": {"summary": report.summary(), "merged_lora_keys": len(artefact.merged),
                         "ignored": report.ignored, "unmatched": report.unmatched, "nonfinite": report.nonfinite}}
    write_manifest(path, artefact.kind, artefact.config, source=source)
    return report


def plan_artefact(artefact: Artefact, options: Options):
    """Check that `artefact` converts (every tensor planned from names and shapes) without reading any."""
    model_cls = KINDS[artefact.kind][1]
    return plan_converted(lambda: model_cls(artefact.config, rngs=nnx.Rngs(0)), artefact.source, artefact.table,
                          strict=options.strict, allow_missing=artefact.allow_missing)


def convert_artefact(out: str, artefact: Artefact, options: Options | None = None, *,
                     overwrite: bool = False) -> LoadReport:
    """`artefact` as the checkpoint directory `out` (policy: `seedx_jax.outputs.atomic_output`)."""
    with atomic_output(out, artefact.kind, inputs=artefact.inputs + artefact.source.files(), overwrite=overwrite,
                       create=False) as tmp:
        return write_artefact(tmp, artefact, options or Options())


def write_tokenizer(path: str, folder: str) -> SeedXTokenizer:
    tokenizer = SeedXTokenizer.from_dir(folder)  # checks the 330 added tokens
    tokenizer.save(path)
    return tokenizer


def convert_tokenizer(out: str, folder: str, *, overwrite: bool = False) -> None:
    SeedXTokenizer.from_dir(folder)  # a bad folder is reported before anything is created
    with atomic_output(out, "tokenizer", inputs=[folder], overwrite=overwrite) as tmp:
        write_tokenizer(tmp, folder)
        write_marker(tmp, "tokenizer", source=os.path.abspath(folder))


def convert_release(root: str, out: str, *, configs: dict[str, str] | None = None, dtype: str | None = None,
                    merge_lora: bool = False, lora_alpha: float | None = None, options: Options | None = None,
                    overwrite: bool = False) -> dict[str, LoadReport]:
    """A whole SEED-X release tree -> `out`: shared `tokenizer/`, `vit/`, `detokenizer_stage{1,2}/`, and
    one pipeline directory per model (`seed_x/`, `seed_x_i/`, `seed_x_edit/`) that `SeedX.load` and
    the `seedx-jax` commands read. Every model's config and tensor plan is checked before anything is
    written, so a bad release fails in seconds. Returns the load report of every model."""
    options, configs = options or Options(), configs or {}
    _single_process()
    release = find_release(root)
    if release.detokenizers and release.sdxl is None:
        raise ArtefactError(f"{root}: the de-tokenizer checkpoints need stable-diffusion-xl-base-1.0/ beside them")
    progress, reports = options.progress, {}
    with progress.stage("checking every model of the release"):
        SeedXTokenizer.from_dir(release.tokenizer)
        artefacts = {"vit": _checked("vit", lambda: vit_artefact(release.vit, config=configs.get("vit"), dtype=dtype))}
        for stage, file in sorted(release.detokenizers.items()):
            artefacts[f"detokenizer_stage{stage}"] = _checked(f"detokenizer_stage{stage}", lambda: detokenizer_artefact(
                file, release.sdxl, config=configs.get("detokenizer"), dtype=dtype))
        for name, (agent, llm) in release.models.items():
            artefacts[f"{name}/agent"] = _checked(f"{name}/agent", lambda: agent_artefact(
                agent, llm, config=configs.get("agent"), dtype=dtype, merge_lora=merge_lora, lora_alpha=lora_alpha))
        for target, artefact in artefacts.items():
            try:
                plan_artefact(artefact, options)
            except ValueError as err:
                raise ArtefactError(f"{target}: {err}") from None
    with atomic_output(out, "release", inputs=[root], overwrite=overwrite) as tmp:
        with progress.stage("tokenizer"):
            write_tokenizer(os.path.join(tmp, "tokenizer"), release.tokenizer)
        for target, artefact in artefacts.items():
            with progress.stage(target):
                reports[target] = write_artefact(os.path.join(tmp, target), artefact, options)
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


def _checked(target: str, make) -> Artefact:
    """`make()`, its errors prefixed with the release part they concern."""
    try:
        return make()
    except ValueError as err:
        raise ArtefactError(f"{target}: {err}") from None
