"""`seedx-jax convert vit | llama | agent | detokenizer | tokenizer | release` and `seedx-jax export`
(also `python -m seedx_jax.convert ...`).

Conversions plan every tensor from names and shapes first and print ONE report of everything that
does not fit (unmatched keys, missing variables, shape mismatches) before reading any data; they
exit 2 with that report and leave no output directory. Progress goes to stderr. While converting, a
torch zip file whose member fails its CRC-32 check (a damaged download) or a source tensor holding
NaN or Inf (unless --allow-nonfinite) also exits 2 with one line naming the file and tensor, and
leaves no output.

`--out` follows the output policy of `seedx_jax.outputs`: a new or empty folder, or an earlier output
of the same kind with `--overwrite`; never a folder of other files, never one that is, holds or lies
inside a source. Ctrl-C or SIGTERM removes the partial output and exits 130 / 143 with one line.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from seedx_jax import paths
from seedx_jax.agent.tokenizer import TokenizerError
from seedx_jax.checkpoint import CheckpointError
from seedx_jax.convert.artefacts import (ArtefactError, agent_artefact, detokenizer_artefact, llama_artefact,
                                         vit_artefact)
from seedx_jax.convert.export import export_checkpoint
from seedx_jax.convert.run import Options, convert_artefact, convert_release, convert_tokenizer
from seedx_jax.exits import ArgumentParser, describe, error_line, exit_code, interrupts_as_exceptions
from seedx_jax.outputs import check_target
from seedx_jax.progress import Progress
from seedx_jax.sharding import make_mesh, mesh_argument
from seedx_jax.sources import SourceError

USER_ERRORS = (ArtefactError, SourceError, CheckpointError, TokenizerError, ValueError, OSError)
OVERWRITE_HELP = "replace an earlier output of the same kind in --out (never a folder of other files)"


def _config_arg(text: str) -> tuple[str, str]:
    kind, sep, spec = text.partition("=")
    if not sep or kind not in ("vit", "agent", "detokenizer"):
        raise argparse.ArgumentTypeError(f"--config {text!r}: expected vit=SPEC, agent=SPEC or detokenizer=SPEC")
    return kind, paths.expand(spec)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="seedx-jax convert", description=__doc__.split("\n\n")[1])
    sub = parser.add_subparsers(dest="what", required=True)

    def command(name: str, help: str, *, model: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--out", required=True, type=paths.argument, help="output directory: new, empty, or an "
                       "earlier output of this command with --overwrite; appears when complete")
        p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")
        if model:
            p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                           help="parameter dtype of the checkpoint (default: the config's, float32)")
            p.add_argument("--strict", action="store_true", help="also fail on source keys no rule maps")
            p.add_argument("--mesh", type=mesh_argument, help="place parameters on a (data, fsdp, tensor) mesh while "
                           "converting, e.g. fsdp=-1 (default: one device)")
            p.add_argument("--flush-mb", type=int, default=128,
                           help="write finished parameters to disk every N MiB (default 128)")
            p.add_argument("--no-hash", action="store_true", help="do not record SHA-256 digests of the sources "
                           "(the CRC-32s of torch zip files are still checked)")
            p.add_argument("--allow-nonfinite", action="store_true", help="convert source tensors holding NaN or "
                           "Inf (listed in the summary and the manifest) instead of stopping at the first")
        return p

    p = command("vit", "the Qwen-VL ViT file (qwen_vit_G.pt) or a Qwen-VL-Chat checkpoint")
    p.add_argument("source", type=paths.argument, help="file or folder")
    p.add_argument("--config", type=paths.argument, help="VisionConfig preset or JSON file of fields (default: "
                   "sizes from the tensor shapes, the rest qwen_vit_g_448)")
    p = command("llama", "a Hugging Face Llama folder (config.json + safetensors or bin, sharded or not)")
    p.add_argument("source", type=paths.argument)
    _lora_args(p)
    p = command("agent", "a SEED-X agent file (release or zero-to-fp32 peft form) over its llm/ folder")
    p.add_argument("source", type=paths.argument, help="agent/pytorch_model.bin")
    p.add_argument("--llm", type=paths.argument,
                   help="the llm/ folder beside it (omit when the file holds every llm.* key)")
    p.add_argument("--config", type=paths.argument, help="AgentConfig preset or JSON file of fields (default: "
                   "resampler sizes from the tensor shapes, the rest seed_x; llm from --llm's config.json)")
    _lora_args(p)
    p = command("detokenizer", "a de-tokenizer stage file over a diffusers SDXL folder")
    p.add_argument("source", type=paths.argument, help="seed_detokenizer/{first,second}_stage/pytorch_model.bin")
    p.add_argument("--sdxl", type=paths.argument, help="stable-diffusion-xl-base-1.0 folder (unet/, vae/)")
    p.add_argument("--config", type=paths.argument, help="DetokenizerConfig preset or JSON file of fields "
                   "(default: U-Net and VAE from --sdxl's diffusers configs, resampler sizes from the tensor "
                   "shapes, the rest stage1; the stage follows the checkpoint's conv_in)")
    p = command("tokenizer", "the SEED-X tokenizer folder (tokenizer.model + added tokens)", model=False)
    p.add_argument("source", type=paths.argument)
    p = command("release", "a whole SEED-X release tree: every model found, one pipeline directory each")
    p.add_argument("source", type=paths.argument)
    p.add_argument("--config", type=_config_arg, action="append", default=[],
                   help="KIND=SPEC per component, e.g. agent=tiny (repeatable)")
    _lora_args(p)
    p = sub.add_parser("export", help="a seedx_jax checkpoint back to the released PyTorch files (+ PEFT adapter)")
    p.add_argument("source", type=paths.argument, help="model checkpoint directory (vit, llama, agent or detokenizer)")
    p.add_argument("--out", required=True, type=paths.argument,
                   help="output directory (new, empty, or an earlier export with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--merge-lora", action="store_true", help="fold LoRA into the weights (default: adapter/ folder)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="tensor dtype (default: each tensor's dtype in the converted source)")
    p.add_argument("--max-shard-mb", type=int, default=2048, help="safetensors shard size (default 2048)")
    p.add_argument("--quiet", action="store_true")
    return parser


def _lora_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--merge-lora", action="store_true", help="fold peft LoRA into the base weights "
                   "(default: keep it as the model's LoRA branch)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha of the source (default: its rank, as SEED-X)")


_KINDS = {"export": "export", "tokenizer": "tokenizer", "release": "release", "vit": "vit", "llama": "llama",
          "agent": "agent", "detokenizer": "detokenizer"}


def _check_args(args: argparse.Namespace) -> None:
    """What can be refused before any file is opened: sizes, and the output folder against the policy."""
    for flag, least in (("flush_mb", 0), ("max_shard_mb", 1)):  # --flush-mb 0: write every variable at once
        if getattr(args, flag, least) < least:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least {least} (MiB), got {getattr(args, flag)}")
    inputs = [args.source] + [p for p in (getattr(args, "llm", None), getattr(args, "sdxl", None)) if p]
    check_target(args.out, _KINDS[args.what], inputs=inputs, overwrite=args.overwrite)


def run(args: argparse.Namespace, progress: Progress) -> str:
    _check_args(args)
    if args.what == "export":
        files = export_checkpoint(args.source, args.out, merge=args.merge_lora, dtype=args.dtype,
                                  max_shard_bytes=args.max_shard_mb << 20, progress=progress, overwrite=args.overwrite)
        return f"wrote {args.out}: {', '.join(files)}"
    if args.what == "tokenizer":
        convert_tokenizer(args.out, args.source, overwrite=args.overwrite)
        return f"wrote {args.out}"
    options = Options(mesh=make_mesh(args.mesh) if args.mesh else None, strict=args.strict,
                      flush_bytes=args.flush_mb << 20, hash_sources=not args.no_hash,
                      allow_nonfinite=args.allow_nonfinite, progress=progress)
    if args.what == "release":
        reports = convert_release(args.source, args.out, configs=dict(args.config), dtype=args.dtype,
                                  merge_lora=args.merge_lora, lora_alpha=args.lora_alpha, options=options,
                                  overwrite=args.overwrite)
        return "\n".join([f"wrote {args.out}"] + [f"  {name}: {r.summary()}" for name, r in reports.items()])
    if args.what == "vit":
        artefact = vit_artefact(args.source, config=args.config, dtype=args.dtype)
    elif args.what == "llama":
        artefact = llama_artefact(args.source, dtype=args.dtype, merge_lora=args.merge_lora, lora_alpha=args.lora_alpha)
    elif args.what == "agent":
        artefact = agent_artefact(args.source, args.llm, config=args.config, dtype=args.dtype,
                                  merge_lora=args.merge_lora, lora_alpha=args.lora_alpha)
    else:
        artefact = detokenizer_artefact(args.source, args.sdxl, config=args.config, dtype=args.dtype)
    report = convert_artefact(args.out, artefact, options, overwrite=args.overwrite)
    merged = f"\n  merged LoRA: {len(artefact.merged)} keys" if artefact.merged else ""
    return f"wrote {args.out}\n{report.text()}{merged}"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (one line, see exits.ArgumentParser) and --help
        return e.code
    progress = Progress(quiet=args.quiet)
    name = "export" if args.what == "export" else f"convert {args.what}"
    try:
        with interrupts_as_exceptions():
            print(run(args, progress), file=sys.stderr)
    except USER_ERRORS as e:
        lines = str(e).splitlines()
        print(f"seedx-jax {name}: error: {error_line(e)}", file=sys.stderr)
        for line in lines[1:] if not isinstance(e, OSError) else ():  # the rest of a load report
            print(line, file=sys.stderr)
        return 2
    except BaseException as e:  # Ctrl-C, SIGTERM: the partial output is already removed
        if isinstance(e, (SystemExit, Exception)):
            raise
        print(f"\nseedx-jax {name}: {describe(e)}; nothing was written to {args.out}", file=sys.stderr)
        return exit_code(e)
    return 0
