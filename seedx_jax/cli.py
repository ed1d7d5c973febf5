"""`seedx-jax chat | generate | edit | reconstruct` (also `python -m seedx_jax`); `seedx-jax convert |
export` are the weight converter's (`seedx_jax.convert.cli`), `seedx-jax serve` the web app's (`seedx_jax.serve`).

Each command opens a pipeline checkpoint directory, checks every argument against it before any
weight loads (numbers and their ranges, prompts, special tokens, images, sizes, the noise file, the
output files), writes PNGs and a JSON record of what was run into `--out`, and prints progress on
stderr. Exit codes: 0 done; 2 bad input (one line `seedx-jax <cmd>: error: ...`); 1 the model gave no
usable result (no image, an image cut off by --max-new-tokens, NaN/Inf values, out of memory: one line
naming the stage); 130 / 143 Ctrl-C / SIGTERM. Outputs appear together when the run succeeds
(`seedx_jax.outputs.OutputFiles`); a failed run leaves no file and no new folder behind.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from typing import Iterator, Sequence

import jax
import numpy as np

import seedx_jax
from seedx_jax import paths
from seedx_jax.agent.prompts import PromptError
from seedx_jax.agent.tokenizer import TokenizerError
from seedx_jax.checkpoint import CheckpointError
from seedx_jax.cli_results import NoResult, no_image, png_writer, printable, text_writer, turn_record
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.exits import ArgumentParser, describe, error_line, exit_code, interrupts_as_exceptions
from seedx_jax.llama.generate import Sampling
from seedx_jax.numerics import NonFiniteError
from seedx_jax.outputs import OutputFiles
from seedx_jax.precision import COMPUTE_DTYPES, LLM_WEIGHTS, Precision
from seedx_jax.progress import Progress, stage_of
from seedx_jax.prompts_file import checked_captions, generate_from_file
from seedx_jax.vision.image_io import ImageInputError, load_image, load_images

USER_ERRORS = (PromptError, TokenizerError, CheckpointError, ImageInputError, ValueError, OSError)
MAX_NEW_TOKENS = {"chat": 512, "generate": 120, "edit": 512}  # the official scripts' settings
# SDXL was trained at 1024x1024 and aspect buckets of about as many pixels: 4x that per side is far
# past what it draws well, and XLA aborts the process on sizes whose buffers overflow its shape sizes.
MAX_SIDE = 4096


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value
    return parse


def _side(text: str) -> int:
    value = _int_at_least(1)(text)
    if value > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{value} must be at most {MAX_SIDE} (pixels; SDXL draws 1024)")
    return value


def _name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty name; leave --name out for the default (the command's name)")
    return text


class _Once(argparse.Action):
    """An input option the command reads one of: a second one would silently replace the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest) is not None:
            parser.error(f"{parser.prog.split()[-1]} takes one {option_string} (given again: {values})")
        setattr(namespace, self.dest, values)


def _refused(reason: str) -> type[argparse.Action]:
    """An option the command does not read: refused, where argparse would take it for the start of a
    longer option (generate's `--image` for `--image-guidance-scale`)."""
    class Refused(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{parser.prog.split()[-1]} takes no {option_string}: {reason}")
    return Refused


def _seed(text: str) -> int:
    value = _int_at_least(0)(text)
    if value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"{value} must be below 2**32")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _add_common(p: argparse.ArgumentParser, *, decodes: bool, renders: bool) -> None:
    p.add_argument("--checkpoint", required=True, type=paths.argument, action=_Once,
                   help="pipeline checkpoint directory (seedx.json, tokenizer/, ...)")
    p.add_argument("--out", default="outputs", type=paths.argument,
                   help="output folder, created if missing (default: outputs)")
    p.add_argument("--name", type=_name, help="output file prefix (default: the command name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the files of an earlier run with the same --out and --name")
    p.add_argument("--seed", type=_seed, default=None, help="seed for sampling and the initial noise, in [0, 2**32)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, default="float32",
                   help="matmul precision of every model; weights stay fp32 (bfloat16 needs a device with native "
                        "bf16: AVX-512 BF16 / AMX CPUs, Ampere+ GPUs, TPUs; default float32)")
    if decodes:
        p.add_argument("--llm-weights", choices=LLM_WEIGHTS, default="float",
                       help="int8: weight-only int8 LLM (per-channel scales, qwix) for faster decoding; "
                            "default float")
    if decodes:
        p.add_argument("--template", choices=("seed_x", "seed_x_i", "seed_x_edit"),
                       help="prompt template (default: the checkpoint's)")
        p.add_argument("--max-new-tokens", type=_int_at_least(1), default=None,
                       help="at most this many generated tokens (default: 512; generate: 120)")
        p.add_argument("--temperature", type=_number, default=0.0, help="0 (default): greedy, as released")
        p.add_argument("--top-k", type=_int_at_least(0), default=0)
        p.add_argument("--top-p", type=_number, default=1.0)
        p.add_argument("--force-image", action="store_true",
                       help="start every answer with <img>, so that the model answers with an image (the official "
                            "demo's 'force image generation'; --max-new-tokens must hold the image tokens + 1)")
    if renders:
        p.add_argument("--steps", type=_int_at_least(1), default=50, help="denoising steps (default 50)")
        p.add_argument("--solver", default="euler", choices=("euler", "ddim", "dpmpp_2m"))
        p.add_argument("--guidance-scale", type=_number, default=7.5)
        p.add_argument("--image-guidance-scale", type=_number, default=1.5, help="editing / stage 2 only")
        for side in ("height", "width"):
            p.add_argument(f"--{side}", type=_side, default=1024,
                           help=f"image {side} in pixels, a multiple of the de-tokenizer's pixel factor (VAE x U-Net "
                                f"downsampling: 32 for SDXL), at most "
                                f"{MAX_SIDE}: SDXL was trained at 1024 (default 1024)")
        p.add_argument("--noise", type=paths.argument, action=_Once,
                       help="initial latent noise: .npy [1, height/f, width/f, 4] (NHWC) of floats, f = VAE factor "
                            "(8 for SDXL)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="seedx-jax", description="SEED-X in JAX: chat, generate, edit, reconstruct; "
                                     "convert / export weights")
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="answer questions about images (any size), optionally with boxes; "
                                       "images the model generates are drawn with a stage-1 de-tokenizer")
    _add_common(chat, decodes=True, renders=True)
    chat.add_argument("--image", action="append", default=[], type=paths.argument, help="input image (repeatable)")
    chat.add_argument("--prompt", action="append", default=[],
                      help="a user turn (repeat for a multi-turn chat; none: read turns from stdin)")
    chat.add_argument("--grounding", action="store_true", help="ask for boxes; draws them on a copy of the image")
    gen = sub.add_parser("generate", help="text-to-image, from one --prompt or a --prompts-file of captions")
    _add_common(gen, decodes=True, renders=True)
    captions = gen.add_mutually_exclusive_group(required=True)
    captions.add_argument("--prompt", action=_Once, help="caption")
    captions.add_argument("--prompts-file", type=paths.argument, action=_Once,
                          help="UTF-8 text, one caption per non-blank line -> <name>-<line>-<k>.png; lines the "
                               "prompt checks refuse are skipped and listed")
    gen.add_argument("--num-images-per-prompt", type=_int_at_least(1), help="--prompts-file: images per caption, "
                     "image k drawn from seed --seed + k (default 1)")
    gen.add_argument("--batch-size", type=_int_at_least(1),
                     help="--prompts-file: captions the LLM decodes at once (default 4)")
    gen.add_argument("--render-batch-size", type=_int_at_least(1),
                     help="--prompts-file: images the de-tokenizer draws at once (default 1; the last bits of a "
                          "pixel can depend on it)")
    gen.add_argument("--image", help=argparse.SUPPRESS,
                     action=_refused("it draws from the caption alone (to change an image: seedx-jax edit)"))
    edit = sub.add_parser("edit", help="instruction editing (SEED-X-Edit, stage-2 de-tokenizer)")
    _add_common(edit, decodes=True, renders=True)
    edit.add_argument("--image", required=True, type=paths.argument, action=_Once, help="the image to edit")
    edit.add_argument("--prompt", required=True, action=_Once, help="editing instruction")
    rec = sub.add_parser("reconstruct", help="image -> ViT features -> de-tokenizer -> image (each --image in turn; "
                                             "bad inputs skipped)")
    _add_common(rec, decodes=False, renders=True)
    rec.add_argument("--image", action="append", required=True, type=paths.argument, help="input image (repeatable)")
    # listed here for --help and the unknown-command message; main() hands them to seedx_jax.convert.cli
    sub.add_parser("convert", add_help=False, help="released PyTorch weights -> seedx_jax checkpoints "
                                                   "(see `seedx-jax convert --help`)")
    sub.add_parser("export", add_help=False, help="a converted checkpoint -> the released PyTorch files "
                                                  "(see `seedx-jax export --help`)")
    sub.add_parser("eval", add_help=False, help="a pipeline on a benchmark (SEED-Bench, POPE, VQAv2, RefCOCO, "
                                                "GenEval prompts, TFDS datasets; see `seedx-jax eval --help`)")
    sub.add_parser("serve", add_help=False, help="the web app (Gradio) and HTTP JSON API over SEED-X pipelines "
                                                 "(see `seedx-jax serve --help`)")
    return parser


def _noise(args) -> np.ndarray | None:
    if args.noise is None:
        return None
    shown = f"--noise {args.noise}"
    try:
        with open(args.noise, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise ValueError(f"{shown}: cannot read it ({e.strerror})") from None
    if head != b"\x93NUMPY":  # np.load would try anything else as a pickle or an .npz archive
        found = ("an empty file" if not head else "a zip archive, such as .npz" if head.startswith(b"PK")
                 else "a pickle" if head.startswith(b"\x80") else "no NumPy header")
        raise ValueError(f"{shown}: not a .npy array ({found}); save one with numpy.save")
    try:
        array = np.load(args.noise, mmap_mode="r", allow_pickle=False)  # mapped: a damaged header may promise any size
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{shown}: not a readable .npy array ({error_line(e)})") from None
    if array.dtype.kind != "f":
        raise ValueError(f"{shown}: holds {array.dtype} values; the noise must be floating-point (float16/32/64)")
    return np.array(array, dtype=np.float32)


class Request:
    """A command's arguments, checked against the opened pipeline before any weight loads."""

    def __init__(self, args, pipe):
        try:
            self._check(args, pipe)
        except ValueError as err:  # the API names its arguments; the user typed options
            raise type(err)(_option_names(str(err), args)) from None

    def _check(self, args, pipe):
        self.args, self.pipe = args, pipe
        command = args.command
        self.precision = Precision(compute_dtype=args.compute_dtype, llm_weights=getattr(args, "llm_weights", "float"))
        self.seed = {"generate": 0, "chat": 0}.get(command, 42) if args.seed is None else args.seed  # 42: official
        self.max_new_tokens = getattr(args, "max_new_tokens", None) or MAX_NEW_TOKENS.get(command)
        # the tokens an answer's image takes: <img> (unless forced into the prompt), the image tokens, </img>
        self.image_span = pipe.configs.agent.num_image_tokens + 2 - int(getattr(args, "force_image", False))
        self.sampling = None
        if command != "reconstruct":
            self.sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
        self.sampler = SamplerConfig(solver=args.solver, num_steps=args.steps, guidance_scale=args.guidance_scale,
                                     image_guidance_scale=args.image_guidance_scale)
        self.noise = _noise(args)
        self.render_kw = dict(height=args.height, width=args.width, sampler=self.sampler, noise=self.noise)
        size = dict(height=args.height, width=args.width, noise=self.noise)
        self.images, self.skipped = [], []
        force = dict(force_image=args.force_image) if command != "reconstruct" else {}
        if command == "chat":
            self.images = [load_image(p) for p in args.image]
            if pipe.renders_text_to_image:  # an answer's images get drawn
                pipe.check_render(args.height, args.width, self.noise, edits=False)
            elif args.force_image:
                raise CheckpointError("--force-image: the checkpoint has no stage-1 de-tokenizer to draw the images")
            for number, prompt in enumerate(args.prompt):
                if number == 0:
                    pipe.prepare_chat(prompt, self.images, grounding=args.grounding,
                                      max_new_tokens=self.max_new_tokens, **force)
                else:
                    pipe.check_user_text(prompt, "question")
            if args.grounding and not self.images:
                raise PromptError("--grounding needs an --image: boxes are measured on the input image")
            self.turns = _chat_turns(args.prompt)
        elif command == "generate" and args.prompts_file is None:
            for option in ("num_images_per_prompt", "batch_size", "render_batch_size"):
                if getattr(args, option) is not None:
                    raise ValueError(f"--{option.replace('_', '-')} goes with --prompts-file (--prompt draws one "
                                     "image)")
            pipe.prepare_generate(args.prompt, max_new_tokens=self.max_new_tokens, **size, **force)
        elif command == "generate":
            if self.noise is not None:
                raise ValueError("--noise goes with --prompt: with --prompts-file, image k of each caption is drawn "
                                 "from seed --seed + k")
            self.captions, self.skipped = checked_captions(pipe, args.prompts_file, max_new_tokens=self.max_new_tokens,
                                                           height=args.height, width=args.width, **force)
            self.batch = dict(num_images_per_prompt=args.num_images_per_prompt or 1, batch_size=args.batch_size or 4,
                              render_batch_size=args.render_batch_size or 1)
        elif command == "edit":
            self.images = [load_image(args.image)]
            pipe.prepare_edit(self.images[0], args.prompt, max_new_tokens=self.max_new_tokens, **size, **force)
        else:
            pipe.check_render(args.height, args.width, self.noise, edits=None)
            good, self.skipped = load_images(args.image)
            for problem in self.skipped:
                print(f"seedx-jax reconstruct: skipped {problem}", file=sys.stderr)
            if not good:
                raise ValueError("no readable input image")
            self.images = good

    def record(self) -> dict:
        args = self.args
        record = {"template": self.pipe.template.name, "seed": self.seed, "precision": self.precision.to_dict(),
                  "render": {"solver": args.solver, "steps": args.steps, "guidance_scale": args.guidance_scale,
                             "image_guidance_scale": args.image_guidance_scale, "height": args.height,
                             "width": args.width, "noise": args.noise}}
        if self.sampling is not None:
            record["decoding"] = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                                  "max_new_tokens": self.max_new_tokens, "force_image": args.force_image}
        if getattr(args, "prompts_file", None):
            record.update(prompts_file=paths.resolve(args.prompts_file), **self.batch)
        if args.command == "reconstruct" or getattr(args, "prompts_file", None):
            record["skipped"] = self.skipped
        return record


def _option_names(message: str, args) -> str:
    """`message` of a pipeline or sampler check with its argument names as the options they come from
    (`height=33` -> `--height 33`, `noise has shape` -> `--noise <file> has shape`)."""
    names = "num_steps|guidance_scale|image_guidance_scale|height|width|max_new_tokens"
    message = re.sub(rf"(?:SamplerConfig\.)?\b({names})=",
                     lambda m: "--" + {"num_steps": "steps"}.get(m[1], m[1]).replace("_", "-") + " ", message)
    if getattr(args, "noise", None):
        message = re.sub(r"^(the )?noise\b", f"--noise {args.noise}:", message)
    return message


# what to change when a stage runs out of memory, by the first word of its name (see _run, SeedX)
MEMORY_HINTS = {"loading": "the weights need a machine with more memory (or a --dtype bfloat16 conversion)",
                "generating": "try a smaller --max-new-tokens, or a shorter prompt or fewer images",
                "decoding": "try a smaller --batch-size or --max-new-tokens",
                "rendering": "try a smaller --height/--width", "reconstructing": "try a smaller --height/--width",
                "drawing": "try a smaller --render-batch-size or --height/--width"}


def out_of_memory(err: BaseException) -> str | None:
    """XLA's RESOURCE_EXHAUSTED or a host MemoryError as one line: which memory, the stage that ran out
    of it, how much was asked for, what to change; None for any other error."""
    if isinstance(err, MemoryError):
        memory, detail = "host", ""
    elif isinstance(err, jax.errors.JaxRuntimeError) and str(err).startswith("RESOURCE_EXHAUSTED"):
        memory = jax.default_backend().upper()
        detail = error_line(err).removeprefix("RESOURCE_EXHAUSTED:").strip()
        asked = re.search(r"(\d+) bytes", detail)
        detail = f" (allocating {int(asked[1]) / 2 ** 30:.2f} GiB)" if asked else f" ({detail})" if detail else ""
    else:
        return None
    stage = stage_of(err)
    hint = MEMORY_HINTS.get(stage.split()[0] if stage else "", "try a machine with more memory")
    return f"out of {memory} memory{f' {stage}' if stage else ''}{detail}; {hint}"


def _run(request: Request, files: OutputFiles, record: dict, progress: Progress) -> None:
    try:
        _run_steps(request, files, record, progress)
    except (jax.errors.JaxRuntimeError, MemoryError) as err:
        line = out_of_memory(err)
        if line is None:
            raise
        raise NoResult(line) from None


def _run_steps(request: Request, files: OutputFiles, record: dict, progress: Progress) -> None:
    args, pipe = request.args, request.pipe
    with progress.stage(f"loading the weights of {args.checkpoint}"):
        pipe.load_weights(precision=request.precision)
    decode_kw = dict(sampling=request.sampling, max_new_tokens=request.max_new_tokens)
    if args.command != "reconstruct":
        decode_kw["force_image"] = args.force_image
    seed = request.seed
    if args.command == "chat":
        conv = None
        for number, prompt in enumerate(request.turns):
            try:
                turn, conv = pipe.chat(prompt, request.images if conv is None else (), conversation=conv,
                                       grounding=args.grounding and conv is None, seed=seed, **decode_kw)
            except PromptError as e:
                if args.prompt and conv is None:  # the first scripted turn: nothing to keep, a bad request
                    raise
                if args.prompt:  # a later one no longer fits the context: keep the answered turns
                    print(f"seedx-jax chat: turn {number + 1}: {e}; the chat stops here, the answered turns are "
                          "written", file=sys.stderr)
                    record["stopped"] = {"turn": number + 1, "reason": str(e)}
                    break
                print(f"seedx-jax chat: {e}", file=sys.stderr)  # interactive: say why, take the next line
                continue
            print(printable(turn.text), flush=True)
            record.setdefault("turns", []).append(turn_record(prompt, turn))
            if turn.cut_off:
                print(f"seedx-jax chat: --max-new-tokens {request.max_new_tokens} ended the answer inside an image",
                      file=sys.stderr)
            if turn.boxes and number == 0:
                from seedx_jax.pipelines import draw_boxes

                files.write("-boxes.png", png_writer(draw_boxes(request.images[0], turn.boxes)))
            if len(turn.image_features) and not pipe.renders_text_to_image:
                print("seedx-jax chat: the answer holds an image, but the checkpoint has no stage-1 de-tokenizer "
                      "to draw it", file=sys.stderr)
            elif len(turn.image_features):
                for k, pixels in enumerate(pipe.render(turn.image_features, seed=seed, **request.render_kw)):
                    files.write(f"-turn{number}-{k}.png", png_writer(pixels))
        if "turns" not in record:
            raise PromptError("no question could be asked: every line on stdin was refused (see above)")
    elif args.command == "generate" and args.prompts_file:
        generate_from_file(request, files, record, decode_kw)
    elif args.command in ("generate", "edit"):
        if args.command == "generate":
            turn, pixels = pipe.generate_image(args.prompt, seed=seed, **decode_kw, **request.render_kw)
        else:
            turn, pixels = pipe.edit(request.images[0], args.prompt, seed=seed, **decode_kw, **request.render_kw)
        print(printable(turn.text), flush=True)
        record["turns"] = [turn_record(args.prompt, turn)]
        if pixels is None:
            raise no_image(turn, request.max_new_tokens, request.image_span)
        files.write(".png", png_writer(pixels))
    else:
        for index, image in request.images:
            pixels = pipe.reconstruct(image, seed=seed, **request.render_kw)
            files.write(f"-{index}.png", png_writer(pixels))


def _chat_turns(prompts: list[str]) -> Iterator[str]:
    """The --prompt turns, else stdin's non-blank lines. The first line is read at once, so that a chat
    without any question is refused before the weights load; the rest as the chat goes (a terminal, or
    a program that waits for each answer)."""
    if prompts:
        return iter(prompts)
    lines = _stdin_turns()
    first = next(lines, None)
    if first is None:
        raise PromptError("no question: give --prompt, or one question per line on stdin (it held none)")
    return itertools.chain([first], lines)


def _stdin_turns() -> Iterator[str]:
    if sys.stdin is None:  # started with stdin closed
        return
    while True:
        try:
            line = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            return
        except UnicodeDecodeError as e:
            raise ValueError(f"stdin: not UTF-8 text ({e.reason})") from None
        if line.strip():
            yield line


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        from seedx_jax.serve.cli import main as serve_main

        return serve_main(argv[1:])
    if argv[:1] == ["eval"]:
        from seedx_jax.evaluation.cli import main as eval_main

        return eval_main(argv[1:])
    if argv[:1] in (["convert"], ["export"]):
        from seedx_jax.convert.cli import main as convert_main

        return convert_main(argv[1:] if argv[0] == "convert" else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (one line, see exits.ArgumentParser) and --help
        return e.code
    name = f"seedx-jax {args.command}"
    try:
        Precision(compute_dtype=args.compute_dtype).check_device()
    except ValueError as e:  # before the checkpoint opens: no model is built on a device that cannot run it
        return _fail(None, f"{name}: error: --compute-dtype {args.compute_dtype}: {str(e).split(': ', 1)[1]}", 2)
    progress = Progress(quiet=args.quiet)
    files = None
    start = time.perf_counter()
    try:
        with interrupts_as_exceptions():
            from seedx_jax.pipelines import SeedX  # after the argument checks: imports JAX models

            pipe = SeedX.open(args.checkpoint, template=getattr(args, "template", None), progress=progress)
            request = Request(args, pipe)  # first: an input that is not what it should be is the problem to name
            images = getattr(args, "image", None) or []
            inputs = [args.checkpoint, *([images] if isinstance(images, str) else images),
                      *filter(None, [getattr(args, "prompts_file", None)])]
            files = OutputFiles(args.out, args.name or args.command, inputs=inputs, overwrite=args.overwrite)
            record = {"command": args.command, "argv": argv, "checkpoint": paths.resolve(args.checkpoint),
                      **request.record(), "seedx_jax_version": seedx_jax.__version__}
            _run(request, files, record, progress)
            record["outputs"] = [path for _, path in files.pending]
            record["elapsed_s"] = round(time.perf_counter() - start, 3)
            files.write(".json", text_writer(json.dumps(record, indent=1)))
            written = files.commit()
    except USER_ERRORS as e:
        return _fail(files, f"{name}: error: {error_line(e)}", 2)
    except (NoResult, NonFiniteError) as e:
        return _fail(files, f"{name}: {error_line(e)}; nothing written", 1)
    except BaseException as e:  # Ctrl-C, SIGTERM
        if isinstance(e, (SystemExit, Exception)):
            if files is not None:
                files.abort()
            raise
        return _fail(files, f"\n{name}: {describe(e)}; nothing written", exit_code(e))
    print(f"wrote {', '.join(paths.display(p) for p in written)}", file=sys.stderr)
    return 0


def _fail(files: OutputFiles | None, line: str, code: int) -> int:
    if files is not None:
        files.abort()
    print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
