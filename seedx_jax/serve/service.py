"""What the web app and the HTTP API do with a request: check it, run it on the served pipelines, one
request at a time, and hand back plain results (text, boxes, PIL images).

Every check runs before a model does, and every refusal is a `RequestError` with one line naming the
field and the problem (the page shows it; the HTTP API answers 400 with it). The server keeps serving
after any refusal or model failure: a failed chat turn leaves the conversation as it was.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import threading
from typing import Any, Iterator, NamedTuple, Sequence

import jax
import numpy as np
from PIL import Image

from seedx_jax.agent.prompts import PromptError
from seedx_jax.agent.tokenizer import TokenizerError
from seedx_jax.checkpoint import CheckpointError
from seedx_jax.diffusion.sampling import RenderSettings
from seedx_jax.diffusion.schedulers import SOLVERS
from seedx_jax.numerics import NonFiniteError
from seedx_jax.pipelines import Conversation, SeedX, Turn, draw_boxes
from seedx_jax.progress import Progress
from seedx_jax.vision.image_io import ImageInputError, ImageSource, describe, load_image

# inputs whose problems are the request's (400); anything else a pipeline raises is the server's
REQUEST_ERRORS = (PromptError, TokenizerError, CheckpointError, ImageInputError, ValueError)


class RequestError(ValueError):
    """A request the server refuses; the message is one line naming the field and the problem."""


class ModelError(RuntimeError):
    """The model ran and produced nothing usable (NaN or Inf values): the server's problem, not the request's."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for. SDXL draws 1024 px (larger sides cost quadratically more and are
    far outside its training), a browser upload of 25 MP is already a 100 MB decoded image."""

    max_side: int = 2048
    max_steps: int = 100
    max_guidance: float = 30.0
    max_image_pixels: int = 25_000_000
    max_images_per_turn: int = 4
    max_new_tokens: int = 1024


class Answer(NamedTuple):
    """A model's answer as the app shows it."""

    text: str  # the answer without SEED-X's tags
    raw_text: str  # as decoded, tags kept
    token_ids: list[int]
    boxes: list[tuple[int, int, int, int]]  # pixel corners on the first input image
    boxed_image: Image.Image | None  # the first input image with the boxes drawn
    images: list[Image.Image]  # images the model drew (rendered by a de-tokenizer)
    note: str | None = None  # why an expected image is missing


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # a browser's number field sends 42.0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise RequestError(f"{name}: {value!r} is not an integer")
    if not low <= value <= high:
        raise RequestError(f"{name}: {value} is outside [{low}, {high}]")
    return int(value)


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise RequestError(f"{name}: {value!r} is not a number")
    if not low <= float(value) <= high:  # NaN fails too
        raise RequestError(f"{name}: {value} is outside [{low}, {high}]")
    return float(value)


class Service:
    """The served pipelines: `chat_pipe` (SEED-X-I: chat, grounding, text-to-image, reconstruction) and
    `edit_pipe` (SEED-X-Edit, stage-2 de-tokenizer); either may be None (its requests are refused).
    `defaults`: the render settings the app starts with."""

    def __init__(self, chat_pipe: SeedX | None, edit_pipe: SeedX | None, *, limits: Limits = Limits(),
                 defaults: RenderSettings = RenderSettings(), banner: str | None = None):
        if chat_pipe is None and edit_pipe is None:
            raise ValueError("nothing to serve: give a chat pipeline, an edit pipeline or both")
        self.chat_pipe, self.edit_pipe = chat_pipe, edit_pipe
        self.limits, self.defaults, self.banner = limits, defaults, banner
        self._lock = threading.Lock()  # one request on the accelerator at a time, whichever door it came in

    # -- checks ----------------------------------------------------------------------------------

    @property
    def pixel_factor(self) -> int:
        pipes = [p for p in (self.chat_pipe, self.edit_pipe) if p is not None and p.configs.detokenizer]
        return max((p.configs.detokenizer.pixel_factor for p in pipes), default=8)

    def settings(self, *, steps=None, guidance_scale=None, image_guidance_scale=None, seed=None, height=None,
                 width=None, solver=None) -> RenderSettings:
        """Render settings from a request (None: the server's default), checked against the limits."""
        d, lim, f = self.defaults, self.limits, self.pixel_factor
        pick = lambda value, default: default if value is None else value  # noqa: E731
        sides = {}
        for name, value in (("height", pick(height, d.height)), ("width", pick(width, d.width))):
            side = _integer(value, name, f, lim.max_side)
            if side % f:
                raise RequestError(f"{name}: {side} is not a multiple of {f} (the de-tokenizer's pixel factor)")
            sides[name] = side
        solver = pick(solver, d.solver)
        if solver not in SOLVERS:
            raise RequestError(f"solver: {solver!r} is not one of {', '.join(SOLVERS)}")
        return RenderSettings(
            steps=_integer(pick(steps, d.steps), "steps", 1, lim.max_steps),
            guidance_scale=_number(pick(guidance_scale, d.guidance_scale), "guidance_scale", 1e-3, lim.max_guidance),
            image_guidance_scale=_number(pick(image_guidance_scale, d.image_guidance_scale), "image_guidance_scale",
                                         1e-3, lim.max_guidance),
            seed=_integer(pick(seed, d.seed), "seed", 0, 2 ** 32 - 1), solver=solver, **sides)

    def max_new_tokens(self, value, default: int) -> int:
        return _integer(default if value is None else value, "max_new_tokens", 1, self.limits.max_new_tokens)

    def load_image(self, source: ImageSource, name: str | None = None) -> Image.Image:
        """An uploaded image, decoded, with the server's pixel limit; errors name it as `name` (the file name
        the user chose, not the server's copy)."""
        try:
            return load_image(source, max_pixels=self.limits.max_image_pixels)
        except ImageInputError as err:
            message = str(err)
            if name is not None:
                message = name + message[len(describe(source)):] if message.startswith(describe(source)) else message
            raise RequestError(message) from None

    def _pipe(self, which: str) -> SeedX:
        pipe = self.chat_pipe if which == "chat" else self.edit_pipe
        if pipe is None:
            what = {"chat": "SEED-X-I checkpoint (--checkpoint)", "edit": "SEED-X-Edit checkpoint "
                    "(--edit-checkpoint)"}[which]
            raise RequestError(f"this server has no {what}")
        return pipe

    @contextlib.contextmanager
    def _running(self, pipe: SeedX, progress: Progress | None) -> Iterator[None]:
        """One request on the models at a time; its progress goes to `progress`; the pipelines' own input
        errors become `RequestError`s, NaN/Inf a `ModelError`."""
        with self._lock:
            saved = pipe.progress
            pipe.progress = progress or Progress(quiet=True)
            try:
                yield
            except RequestError:
                raise
            except REQUEST_ERRORS as err:
                raise RequestError(str(err).splitlines()[0]) from None
            except NonFiniteError as err:
                raise ModelError(str(err).splitlines()[0]) from None
            except (jax.errors.JaxRuntimeError, MemoryError) as err:
                from seedx_jax.cli import out_of_memory

                line = out_of_memory(err)  # "out of CPU memory rendering ...; try a smaller --height/--width"
                if line is None:
                    raise
                raise ModelError(re.sub(r"--([a-z-]+)", lambda m: m[1].replace("-", "_"), line)) from None  # fields
            finally:
                pipe.progress = saved

    # -- requests ----------------------------------------------------------------------------------

    def chat(self, question: str, images: Sequence[Image.Image] = (), conversation: Conversation | None = None, *,
             grounding: bool = False, force_image: bool = False, max_new_tokens=None, settings: RenderSettings,
             progress: Progress | None = None) -> tuple[Answer, Conversation]:
        """One user turn -> (answer, the conversation with it). `conversation` is not changed: a failed
        turn leaves the caller's as it was. Images the model draws are rendered with `settings`."""
        pipe = self._pipe("chat")
        if len(images) > self.limits.max_images_per_turn:
            raise RequestError(f"images: {len(images)} in one turn; at most {self.limits.max_images_per_turn}")
        max_new_tokens = self.max_new_tokens(max_new_tokens, 512)
        first = conversation is None or not conversation.turns
        conv = copy.deepcopy(conversation) if conversation is not None and conversation.turns else None
        try:
            with self._running(pipe, progress):
                turn, conv = pipe.chat(question, images, conversation=conv, grounding=grounding and first,
                                       force_image=force_image, max_new_tokens=max_new_tokens, seed=settings.seed)
                drawn, note = self._draw(pipe, turn, settings, max_new_tokens)
        except RequestError as err:
            if not first and "exceeds the context" in str(err):  # the history has filled the context
                raise RequestError(f"{err}; clear the conversation or lower max_new_tokens") from None
            raise
        boxed = draw_boxes(conv.images[0], turn.boxes) if turn.boxes and conv.images else None
        return _answer(turn, drawn, boxed, note), conv

    def text_to_image(self, prompt: str, *, force_image: bool = False, max_new_tokens=None,
                      settings: RenderSettings, progress: Progress | None = None) -> Answer:
        pipe = self._pipe("chat")
        max_new_tokens = self.max_new_tokens(max_new_tokens, 120)
        with self._running(pipe, progress):
            turn, pixels = pipe.generate_image(prompt, force_image=force_image, max_new_tokens=max_new_tokens,
                                               height=settings.height, width=settings.width,
                                               sampler=settings.sampler, seed=settings.seed)
        images = [] if pixels is None else [Image.fromarray(pixels)]
        return _answer(turn, images, None, None if images else _no_image_note(turn, max_new_tokens))

    def edit(self, image: Image.Image, instruction: str, *, force_image: bool = False, max_new_tokens=None,
             settings: RenderSettings, progress: Progress | None = None) -> Answer:
        pipe = self._pipe("edit")
        max_new_tokens = self.max_new_tokens(max_new_tokens, 512)
        with self._running(pipe, progress):
            turn, pixels = pipe.edit(image, instruction, force_image=force_image, max_new_tokens=max_new_tokens,
                                     height=settings.height, width=settings.width, sampler=settings.sampler,
                                     seed=settings.seed)
        images = [] if pixels is None else [Image.fromarray(pixels)]
        return _answer(turn, images, None, None if images else _no_image_note(turn, max_new_tokens))

    def reconstruct(self, image: Image.Image, *, settings: RenderSettings,
                    progress: Progress | None = None) -> Image.Image:
        """image -> ViT -> de-tokenizer -> image, with the chat checkpoint's de-tokenizer (else the edit one's)."""
        pipe = self.chat_pipe if self.chat_pipe is not None and self.chat_pipe.configs.detokenizer else self.edit_pipe
        if pipe is None or pipe.configs.detokenizer is None:
            raise RequestError("no served checkpoint has a de-tokenizer to reconstruct with")
        with self._running(pipe, progress):
            pixels = pipe.reconstruct(image, height=settings.height, width=settings.width, sampler=settings.sampler,
                                      seed=settings.seed)
        return Image.fromarray(pixels)

    def _draw(self, pipe: SeedX, turn: Turn, settings: RenderSettings, max_new_tokens: int):
        """The chat answer's images, rendered -> (images, note on why one is missing or None)."""
        if turn.cut_off:
            return [], _no_image_note(turn, max_new_tokens)
        if not len(turn.image_features):
            return [], None
        if not pipe.renders_text_to_image:
            return [], "the answer holds an image, but the checkpoint has no stage-1 de-tokenizer to draw it"
        pixels = pipe.render(turn.image_features, height=settings.height, width=settings.width,
                             sampler=settings.sampler, seed=settings.seed)
        return [Image.fromarray(p) for p in pixels], None


def _answer(turn: Turn, images: list[Image.Image], boxed: Image.Image | None, note: str | None) -> Answer:
    return Answer(turn.text, turn.raw_text, list(turn.token_ids), [tuple(b) for b in turn.boxes], boxed, images, note)


def _no_image_note(turn: Turn, max_new_tokens: int) -> str:
    if turn.cut_off:
        return f"max_new_tokens={max_new_tokens} ended the answer inside its image; raise it"
    return "the model answered without an image; 'force image generation' (force_image) makes it draw"
