"""What the `seedx-jax` commands write and say about a model's answers: file writers for
`seedx_jax.outputs.OutputFiles`, an answer's JSON record, the terminal text, and `NoResult`."""
from __future__ import annotations

import numpy as np
from PIL import Image


class NoResult(Exception):
    """The model ran but gave nothing to write (no image, one cut off by max_new_tokens, or it ran out of
    memory)."""


def png_writer(pixels: np.ndarray | Image.Image):
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    return lambda path: image.save(path, format="PNG")


def text_writer(text: str):
    def write(path: str) -> None:
        with open(path, "w") as f:
            f.write(text)
    return write


def turn_record(prompt: str, turn) -> dict:
    return {"prompt": prompt, **answer_record(turn)}


def answer_record(turn) -> dict:
    return {"text": turn.text, "raw_text": turn.raw_text, "boxes": [list(b) for b in turn.boxes],
            "generated_images": int(len(turn.image_features)), "cut_off": turn.cut_off}


def no_image(turn, max_new_tokens: int, span: int) -> NoResult:
    """Why `turn` holds no image; `span`: the tokens an image takes in the answer (`<img>` included unless
    the prompt opened it)."""
    if turn.cut_off:
        return NoResult(f"--max-new-tokens {max_new_tokens} ended the answer inside its image after "
                        f"{len(turn.token_ids)} tokens; raise it (the image span alone takes {span})")
    shown = turn.raw_text if len(turn.raw_text) <= 100 else turn.raw_text[:100] + "..."
    return NoResult(f"the model answered without an image ({len(turn.token_ids)} tokens: {shown!r}); --force-image "
                    "makes it draw")


def printable(text: str) -> str:
    """An answer for the terminal: control characters other than newlines and tabs (an untrained model
    emits them) would move the cursor or garble the screen; the JSON record keeps them."""
    return "".join(c if c in "\n\t" or c.isprintable() else "\ufffd" for c in text)
