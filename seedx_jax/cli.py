"""`seedx-jax chat | generate | edit | reconstruct` (also `python -m seedx_jax`); `seedx-jax convert |
export` are the weight converter's (`seedx_jax.convert.cli`).

Each command loads a pipeline checkpoint directory, writes PNGs and a JSON record of what was run
into `--out`, prints progress on stderr, and exits 2 with one line `seedx-jax <cmd>: error: ...` on
bad input. Files appear only complete (written under a temporary name, then renamed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Sequence

import numpy as np
from PIL import Image

import seedx_jax
from seedx_jax.agent.prompts import PromptError
from seedx_jax.agent.tokenizer import TokenizerError
from seedx_jax.checkpoint import CheckpointError
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.llama.generate import Sampling
from seedx_jax.progress import Progress
from seedx_jax.vision.image_io import ImageInputError, load_image, load_images

USER_ERRORS = (PromptError, TokenizerError, CheckpointError, ImageInputError, ValueError, OSError)


def _add_common(p: argparse.ArgumentParser, *, decodes: bool, renders: bool) -> None:
    p.add_argument("--checkpoint", required=True, help="pipeline checkpoint directory (seedx.json, tokenizer/, ...)")
    p.add_argument("--out", default="outputs", help="output directory (default: outputs)")
    p.add_argument("--name", help="output file prefix (default: the command name)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling and the initial noise")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    if decodes:
        p.add_argument("--template", choices=("seed_x", "seed_x_i", "seed_x_edit"),
                       help="prompt template (default: the checkpoint's)")
        p.add_argument("--max-new-tokens", type=int, default=None)
        p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy, as released")
        p.add_argument("--top-k", type=int, default=0)
        p.add_argument("--top-p", type=float, default=1.0)
    if renders:
        p.add_argument("--steps", type=int, default=50)
        p.add_argument("--solver", default="euler", choices=("euler", "ddim", "dpmpp_2m"))
        p.add_argument("--guidance-scale", type=float, default=7.5)
        p.add_argument("--image-guidance-scale", type=float, default=1.5, help="editing / stage 2 only")
        p.add_argument("--height", type=int, default=1024)
        p.add_argument("--width", type=int, default=1024)
        p.add_argument("--noise", help="initial latent noise: .npy [1, height/f, width/f, 4] (NHWC), f = VAE factor (8 for SDXL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedx-jax", description="SEED-X in JAX: chat, generate, edit, reconstruct; "
                                     "convert / export weights (see `seedx-jax convert --help`)")
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="answer questions about images (any size), optionally with boxes; "
                                       "images the model generates are drawn with a stage-1 de-tokenizer")
    _add_common(chat, decodes=True, renders=True)
    chat.add_argument("--image", action="append", default=[], help="input image (repeatable)")
    chat.add_argument("--prompt", action="append", default=[],
                      help="a user turn (repeat for a multi-turn chat; none: read turns from stdin)")
    chat.add_argument("--grounding", action="store_true", help="ask for boxes; draws them on a copy of the image")
    gen = sub.add_parser("generate", help="text-to-image")
    _add_common(gen, decodes=True, renders=True)
    gen.add_argument("--prompt", required=True, help="caption")
    edit = sub.add_parser("edit", help="instruction editing (SEED-X-Edit, stage-2 de-tokenizer)")
    _add_common(edit, decodes=True, renders=True)
    edit.add_argument("--image", required=True)
    edit.add_argument("--prompt", required=True, help="editing instruction")
    rec = sub.add_parser("reconstruct", help="image -> ViT features -> de-tokenizer -> image (batch; bad inputs skipped)")
    _add_common(rec, decodes=False, renders=True)
    rec.add_argument("--image", action="append", required=True, help="input image (repeatable)")
    return parser


def _atomic_write(path: str, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(path) or ".")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def save_png(path: str, pixels: np.ndarray | Image.Image) -> str:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    _atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def _sampling(args) -> Sampling:
    return Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)


def _sampler(args) -> SamplerConfig:
    return SamplerConfig(solver=args.solver, num_steps=args.steps, guidance_scale=args.guidance_scale,
                         image_guidance_scale=args.image_guidance_scale)


def _noise(args) -> np.ndarray | None:
    if not args.noise:
        return None
    try:
        return np.load(args.noise).astype(np.float32)
    except (OSError, ValueError) as e:
        raise ValueError(f"--noise {args.noise}: cannot read a .npy array ({e})") from None


def _turn_record(prompt: str, turn) -> dict:
    return {"prompt": prompt, "text": turn.text, "raw_text": turn.raw_text, "boxes": [list(b) for b in turn.boxes],
            "generated_images": int(len(turn.image_features))}


def _run(args, record: dict, out_prefix: str, progress: Progress) -> None:
    from seedx_jax.pipelines import SeedX, draw_boxes  # after argument checks: imports JAX models

    decode_kw = {}
    if args.command != "reconstruct":
        decode_kw = dict(sampling=_sampling(args))
        if args.max_new_tokens is not None:
            decode_kw["max_new_tokens"] = args.max_new_tokens
        record["decoding"] = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                              "max_new_tokens": args.max_new_tokens}
    render_kw = dict(height=args.height, width=args.width, sampler=_sampler(args), noise=_noise(args))
    record["render"] = {"solver": args.solver, "steps": args.steps, "guidance_scale": args.guidance_scale,
                        "image_guidance_scale": args.image_guidance_scale, "height": args.height, "width": args.width,
                        "noise": args.noise}
    seed = {"generate": 0, "chat": 0}.get(args.command, 42) if args.seed is None else args.seed  # 42: official edit/recon
    record["seed"] = seed

    if args.command == "chat":
        images = [load_image(p) for p in args.image]  # before loading the model
        prompts = args.prompt or None
    elif args.command == "edit":
        images = [load_image(args.image)]
    with progress.stage(f"loading {args.checkpoint}"):
        pipe = SeedX.load(args.checkpoint, template=getattr(args, "template", None), progress=progress)
    record["template"] = pipe.template.name

    if args.command == "chat":
        if pipe.renders_text_to_image:  # size / noise errors before any compile
            pipe.check_render(args.height, args.width, render_kw["noise"], edits=False)
        conv = None
        for number, prompt in enumerate(prompts or _stdin_turns()):
            try:
                turn, conv = pipe.chat(prompt, images if conv is None else (), conversation=conv,
                                       grounding=args.grounding and conv is None, seed=seed, **decode_kw)
            except PromptError as e:
                if prompts:  # scripted turns: fail the run; interactive: say why, take the next line
                    raise
                print(f"seedx-jax chat: {e}", file=sys.stderr)
                continue
            print(turn.text, flush=True)
            record.setdefault("turns", []).append(_turn_record(prompt, turn))
            if turn.boxes and number == 0:
                record["outputs"].append(save_png(f"{out_prefix}-boxes.png", draw_boxes(images[0], turn.boxes)))
            if len(turn.image_features) and not pipe.renders_text_to_image:
                print("seedx-jax chat: the answer holds an image, but the checkpoint has no stage-1 de-tokenizer "
                      "to draw it", file=sys.stderr)
            elif len(turn.image_features):
                for k, pixels in enumerate(pipe.render(turn.image_features, seed=seed, **render_kw)):
                    record["outputs"].append(save_png(f"{out_prefix}-turn{number}-{k}.png", pixels))
    elif args.command in ("generate", "edit"):
        if args.command == "generate":
            turn, pixels = pipe.generate_image(args.prompt, seed=seed, **decode_kw, **render_kw)
        else:
            turn, pixels = pipe.edit(images[0], args.prompt, seed=seed, **decode_kw, **render_kw)
        print(turn.text, flush=True)
        record["turns"] = [_turn_record(args.prompt, turn)]
        if pixels is None:
            raise ValueError(f"the model answered without an image: {turn.raw_text!r}")
        record["outputs"].append(save_png(f"{out_prefix}.png", pixels))
    else:
        good, skipped = load_images(args.image)
        for problem in skipped:
            print(f"seedx-jax reconstruct: skipped {problem}", file=sys.stderr)
        record["skipped"] = skipped
        if not good:
            raise ValueError("no readable input image")
        for index, image in good:
            pixels = pipe.reconstruct(image, seed=seed, **render_kw)
            record["outputs"].append(save_png(f"{out_prefix}-{index}.png", pixels))


def _stdin_turns():
    while True:
        try:
            line = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            return
        if line.strip():
            yield line


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["convert"], ["export"]):
        from seedx_jax.convert.cli import main as convert_main

        return convert_main(argv[1:] if argv[0] == "convert" else argv)
    args = build_parser().parse_args(argv)
    progress = Progress(quiet=args.quiet)
    os.makedirs(args.out, exist_ok=True)
    out_prefix = os.path.join(args.out, args.name or args.command)
    record = {"command": args.command, "argv": argv,
              "checkpoint": os.path.abspath(args.checkpoint), "outputs": [], "seedx_jax_version": seedx_jax.__version__}
    start = time.perf_counter()
    try:
        _run(args, record, out_prefix, progress)
    except USER_ERRORS as e:
        for path in record["outputs"]:  # no partial result set: a failed run leaves no files
            os.remove(path)
        print(f"seedx-jax {args.command}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2
    record["elapsed_s"] = round(time.perf_counter() - start, 3)
    json_path = f"{out_prefix}.json"
    _atomic_write(json_path, lambda tmp: _write_text(tmp, json.dumps(record, indent=1)))
    print(f"wrote {', '.join(record['outputs'] + [json_path])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
