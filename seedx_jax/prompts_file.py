"""`seedx-jax generate --prompts-file`: one caption per non-blank line of a UTF-8 text file, each checked as a
`--prompt` is (refused lines skipped and listed), drawn in batches by `SeedX.generate_images`."""
from __future__ import annotations

import codecs
import sys

from seedx_jax.agent.prompts import PromptError
from seedx_jax.cli_results import NoResult, answer_record, no_image, png_writer


def read_prompts_file(path: str) -> tuple[list[tuple[int, str]], list[str]]:
    """(line number from 1, the line without surrounding whitespace) of each non-blank line of `path`, and
    `FILE:LINE: not UTF-8 text` for each line that does not decode (skipped, as any refused line).

    Lines are split at `\\n` only, so the numbers are an editor's; a UTF-8 byte-order mark is dropped.

    Raises:
      ValueError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ValueError(f"--prompts-file {path}: cannot read it ({err.strerror})") from None
    lines, undecodable = [], []
    for number, raw in enumerate(data.removeprefix(codecs.BOM_UTF8).split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            undecodable.append(f"{path}:{number}: not UTF-8 text")
            continue
        if line:
            lines.append((number, line))
    return lines, undecodable


def checked_captions(pipe, path: str, *, max_new_tokens: int, height: int, width: int,
                     force_image: bool = False) -> tuple[list[tuple[int, str]], list[str]]:
    """The lines of `path` that `pipe.prepare_generate` accepts, and `FILE:LINE: reason` for each it refuses
    (printed on stderr). The checks that do not depend on a caption come first: they fail the command.

    Raises:
      ValueError (PromptError, ...): a bad size or `max_new_tokens`, an unreadable file, no usable line.
    """
    pipe.check_generate(max_new_tokens=max_new_tokens, height=height, width=width, force_image=force_image)
    lines, refused = read_prompts_file(path)
    usable = []
    for number, caption in lines:
        try:
            pipe.prepare_generate(caption, max_new_tokens=max_new_tokens, renders=False, force_image=force_image)
        except PromptError as err:
            refused.append(f"{path}:{number}: {err}")
        else:
            usable.append((number, caption))
    if not usable:
        why = f"{len(refused)} line(s) refused, the first: {refused[0]}" if refused else "it has no non-blank line"
        raise PromptError(f"--prompts-file {path}: no usable caption ({why})")
    for problem in refused:
        print(problem, file=sys.stderr)
    return usable, refused


def generate_from_file(request, files, record: dict, decode_kw: dict) -> None:
    """Draw the checked captions of `request` (`seedx_jax.cli.Request`) into `files` as
    `<name>-<line>-<k>.png`; a caption answered without an image is said on stderr and in `record`.

    Raises:
      NoResult: no caption was answered with an image.
    """
    args, path = request.args, request.args.prompts_file
    results = request.pipe.generate_images([caption for _, caption in request.captions], seed=request.seed,
                                           **request.batch, height=args.height, width=args.width,
                                           sampler=request.sampler, **decode_kw)
    record["captions"] = []
    for (line, caption), result in zip(request.captions, results):
        drawn = [{"index": image.index, "seed": image.seed,
                  "file": files.write(f"-{line:04d}-{image.index}.png", png_writer(image.pixels))}
                 for image in result.images]
        for turn in result.turns:
            if not len(turn.image_features):
                print(f"{path}:{line}: {no_image(turn, request.max_new_tokens, request.image_span)}", file=sys.stderr)
        record["captions"].append({"line": line, "prompt": caption, "answers": [answer_record(t) for t in result.turns],
                                   "images": drawn})
    if not any(entry["images"] for entry in record["captions"]):
        raise NoResult(f"no caption of --prompts-file {path} was answered with an image (see above)")
