"""Reading images from paths, bytes or PIL objects, with one-line errors that name the input.

Every image comes back as RGB with its EXIF orientation applied. 16-bit and float greyscale images
are rescaled to 8 bits first: PIL's own convert("RGB") clips them, turning most of the picture
white (the official code would do that; we deliberately do not).
"""
from __future__ import annotations

import io
import os
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, Image.Image]
DEFAULT_MAX_PIXELS = 64_000_000  # well below PIL's decompression-bomb limit, far above any photo


class ImageInputError(ValueError):
    """A bad image input; the message names the input and the problem."""


def describe(src: ImageSource) -> str:
    if isinstance(src, bytes):
        return f"<{len(src)} bytes>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.mode} {src.size[0]}x{src.size[1]}>"
    return str(src)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and pixels.max() <= 1.0:
            pixels = pixels * 255.0  # float image in [0, 1]
        elif image.mode.startswith("I;16") or pixels.max() > 255:
            pixels = pixels / 257.0  # 16-bit range -> 8-bit
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def _check_max_pixels(max_pixels) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels={max_pixels!r} must be a positive integer")


def load_image(src: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A decoded RGB PIL image from a path (str or os.PathLike), the bytes of an image file, or a PIL image.

    Raises:
      ImageInputError: naming `src`, on any problem with it (another type included: a numpy array
        goes through `PIL.Image.fromarray` first).
      ValueError: `max_pixels` is not a positive int.
    """
    _check_max_pixels(max_pixels)
    if not isinstance(src, (str, os.PathLike, bytes, Image.Image)):
        raise ImageInputError(f"<{type(src).__name__}>: not an image source (a path, the bytes of an image file "
                              f"or a PIL image)")
    name = describe(src)
    try:
        if isinstance(src, Image.Image):
            image = src
        else:
            if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
                raise ImageInputError(f"{name}: a directory, not an image file")
            if isinstance(src, (str, os.PathLike)) and not os.path.isfile(src):
                raise ImageInputError(f"{name}: no such file")
            if isinstance(src, (str, os.PathLike)) and os.path.getsize(src) == 0 or isinstance(src, bytes) and not src:
                raise ImageInputError(f"{name}: an empty file (0 bytes)")
            image = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
        width, height = image.size
        if width == 0 or height == 0:
            raise ImageInputError(f"{name}: image has zero size ({width}x{height})")
        if width * height > max_pixels:  # checked from the header, before decoding
            raise ImageInputError(f"{name}: {width}x{height} = {width * height} pixels exceeds "
                                  f"max_pixels={max_pixels}")
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageInputError(f"{name}: cannot decode image ({err})") from None


def load_images(sources: Sequence[ImageSource] | Iterable[ImageSource], *,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[tuple[int, Image.Image]], list[str]]:
    """Batch form: ([(index, image), ...] for good inputs, ["<input>: <problem>", ...] for skipped).

    Raises:
      ValueError: `sources` is one image source (a path, bytes or a PIL image: iterating a path would
        load its characters) or not iterable; `max_pixels` is not a positive int.
    """
    if isinstance(sources, (str, os.PathLike, bytes, Image.Image)):
        raise ValueError(f"sources must be a list of image sources, got a single {type(sources).__name__}: "
                         f"pass [source]")
    if not isinstance(sources, Iterable):
        raise ValueError(f"sources must be a list of image sources, got {type(sources).__name__}")
    _check_max_pixels(max_pixels)
    good, skipped = [], []
    for index, src in enumerate(sources):
        try:
            good.append((index, load_image(src, max_pixels=max_pixels)))
        except ImageInputError as err:
            skipped.append(str(err))
    return good, skipped
