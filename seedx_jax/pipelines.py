"""`SeedX`: comprehension (any-res images, grounding, multi-turn), text-to-image, editing and
de-tokenizer reconstruction on one loaded checkpoint (SEEDX.md §1.3 data flows (a)-(d)).

Every input is checked before anything is compiled: images decode (one-line errors naming the
input), user text holds no image-structure tokens, boxes need an image, the prompt fits the context,
an explicit noise array has the latent shape of the requested size.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from PIL import Image, ImageDraw

from seedx_jax import tokens as T
from seedx_jax.agent.boxes import Box, parse_boxes
from seedx_jax.agent.generate import ImageTokenForcing, generate_agent, generated_text
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.prompts import PromptError, get_template
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import (PIPELINE_PARTS, CheckpointError, load_model, pipeline_component,
                                  read_pipeline_manifest)
from seedx_jax.detokenizer.model import Detokenizer, negative_features, to_uint8
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.llama.generate import Sampling
from seedx_jax.progress import Progress, reporting
from seedx_jax.sharding import Rules
from seedx_jax.vision.anyres import COMPREHENSION_GRIDS, EDIT_GRIDS, AnyResImage, image_transform, process_anyres
from seedx_jax.vision.encode import ViewEncoder
from seedx_jax.vision.image_io import ImageSource, load_image
from seedx_jax.vision.vit import QwenViT

PROMPT_BUCKET = 64  # prompts are right-padded to a multiple of this: one decode program per bucket
_STRUCTURE = {T.IMG_START, T.IMG_END, T.PATCH_START, T.PATCH_END}
_TAG_RE = re.compile(r"<(?:img_\d+|loc-\d+|/?img|/?patch|box_start|box_end)>")


@dataclasses.dataclass
class Conversation:
    """A multi-turn chat: token history, which positions take image features, and those features.

    Earlier turns are re-prefilled each turn (ViT features are kept, not recomputed). Images the
    model generated stay in the history as their token embeddings, as during generation.
    """

    ids: list[int]
    cmp_mask: list[bool]
    features: list[np.ndarray] = dataclasses.field(default_factory=list)  # per view [256, C]
    positions: list[np.ndarray] = dataclasses.field(default_factory=list)  # per view [2]
    images: list[Image.Image] = dataclasses.field(default_factory=list)  # user images, originals
    turns: int = 0


class Turn(NamedTuple):
    text: str  # generated text with SEED-X tags removed (as the official scripts display it)
    raw_text: str  # generated text as decoded (tags kept; image token spans dropped, §5.5)
    boxes: list[Box]  # grounding: pixel boxes on the first input image
    image_features: np.ndarray  # [k, 64, C] features of the k images the model generated
    token_ids: list[int]


class SeedX:
    def __init__(self, tokenizer: SeedXTokenizer, vit: QwenViT, agent: SeedXAgent,
                 detokenizer: Detokenizer | None = None, *, template: str = "seed_x_i",
                 progress: Progress | None = None):
        acfg = agent.config
        if tokenizer.vocab_size != acfg.llm.vocab_size:
            raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} ids but the LLM vocabulary is "
                                  f"{acfg.llm.vocab_size}")
        if vit.config.output_dim != acfg.feature_dim:
            raise CheckpointError(f"ViT output_dim={vit.config.output_dim} != agent feature size {acfg.feature_dim}")
        if detokenizer is not None and detokenizer.config.resampler.embedding_dim != acfg.feature_dim:
            raise CheckpointError(f"de-tokenizer takes {detokenizer.config.resampler.embedding_dim}-d features, "
                                  f"the agent regresses {acfg.feature_dim}-d")
        self.tokenizer, self.vit, self.agent, self.detokenizer = tokenizer, vit, agent, detokenizer
        self.template = get_template(template)
        self.progress = progress or Progress(quiet=True)
        self.forcing = ImageTokenForcing.from_tokenizer(tokenizer, acfg.num_image_tokens)
        self.encoder = ViewEncoder(vit)
        self._negative = None

    @classmethod
    def load(cls, path: str, *, template: str | None = None, progress: Progress | None = None,
             mesh: Mesh | None = None, rules: Rules | None = None) -> "SeedX":
        """A pipeline directory written by `seedx_jax.checkpoint.save_pipeline`; with `mesh`, every
        parameter is restored straight into its sharding (a model larger than one device's memory)."""
        manifest = read_pipeline_manifest(path)
        dirs = {part: pipeline_component(path, manifest, part) for part in PIPELINE_PARTS}
        for part in ("tokenizer", "vit", "agent"):
            if not os.path.isdir(dirs[part]):
                raise CheckpointError(f"{path} lacks its {part} directory ({dirs[part]})")
        tokenizer = SeedXTokenizer.from_dir(dirs["tokenizer"])
        vit = load_model(dirs["vit"], "vit", mesh=mesh, rules=rules)
        agent = load_model(dirs["agent"], "agent", mesh=mesh, rules=rules)
        detokenizer = None
        if os.path.isdir(dirs["detokenizer"]):
            detokenizer = load_model(dirs["detokenizer"], "detokenizer", mesh=mesh, rules=rules)
        return cls(tokenizer, vit, agent, detokenizer, template=template or manifest["template"], progress=progress)

    # -- inputs --------------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        return self.vit.config.image_size

    def check_user_text(self, text: str, name: str = "prompt") -> str:
        """User text may hold box/location tokens, but no image structure or control tokens."""
        for part in self.tokenizer.split(text):
            if part in _STRUCTURE or part.startswith("<img_") or part in ("<s>", "</s>", "<unk>"):
                raise PromptError(f"{name} contains {part!r}: images are passed as images, not typed as tokens")
        for tag in _TAG_RE.findall(text):
            if tag not in self.tokenizer.added_tokens:
                raise PromptError(f"{name} contains {tag!r}, which is not a SEED-X token")
        return text

    def _anyres(self, images: Sequence[ImageSource], grids) -> tuple[list[Image.Image], list[AnyResImage]]:
        pil = [load_image(src) for src in images]
        return pil, [process_anyres(im, grids, base=self.image_size) for im in pil]

    def new_conversation(self) -> Conversation:
        return Conversation(ids=[self.tokenizer.bos_id], cmp_mask=[False])

    def _add_user_turn(self, conv: Conversation, text: str, pil: list[Image.Image], anyres: list[AnyResImage],
                       max_new_tokens: int) -> None:
        """Append a user turn; checked first (context, slots), so a refused turn leaves `conv` as it was."""
        ids = self.tokenizer.encode(text)
        ctx = self.agent.config.llm.max_position_embeddings
        t = len(conv.ids) + len(ids)
        if t + max_new_tokens > ctx:
            raise PromptError(f"prompt has {t} tokens; with max_new_tokens={max_new_tokens} it exceeds the "
                              f"context of {ctx} positions")
        mask = _between_pairs(ids, self.tokenizer)
        views = sum(a.num_views for a in anyres)
        n = self.agent.config.num_image_tokens
        if sum(mask) != views * n:
            raise PromptError(f"prompt has {sum(mask)} image placeholder slots, its {views} image views need {views * n}")
        if views:
            with self.progress.stage(f"encoding {len(anyres)} image(s), {views} views"):
                feats = self.encoder(np.concatenate([a.pixels for a in anyres]))
            conv.features.extend(np.asarray(feats))
            conv.positions.extend(np.concatenate([a.positions for a in anyres]))
            conv.images.extend(pil)
        conv.ids.extend(ids)
        conv.cmp_mask.extend(mask)

    def _image_texts(self, anyres: list[AnyResImage]) -> list[str]:
        return [T.anyres_image_text(a.num_tiles, self.agent.config.num_image_tokens) for a in anyres]

    # -- generation ----------------------------------------------------------------------------

    def _decode(self, conv: Conversation, max_new_tokens: int, sampling: Sampling, seed: int, *,
                opened_box: bool = False) -> Turn:
        ctx = self.agent.config.llm.max_position_embeddings
        t = len(conv.ids)
        padded = min(-(-t // PROMPT_BUCKET) * PROMPT_BUCKET, ctx - max_new_tokens)
        ids = np.zeros((1, padded), np.int32)
        ids[0, :t] = conv.ids
        mask = np.zeros((1, padded), bool)
        mask[0, :t] = conv.cmp_mask
        feats = dict(ids_cmp_mask=mask, cmp_features=np.stack(conv.features),
                     cmp_positions=np.stack(conv.positions)) if conv.features else {}
        with self.progress.stage(f"generating (prompt {t} tokens, at most {max_new_tokens} new)"), \
                reporting(self.progress):
            out = generate_agent(self.agent, ids, prompt_lengths=[t], max_new_tokens=max_new_tokens,
                                 forcing=self.forcing, stop_token_ids=[self.tokenizer.eos_id], sampling=sampling,
                                 seed=seed, pad_token_id=self.tokenizer.pad_id, progress=True, **feats)
        new = out.tokens[0, :out.num_tokens[0]].tolist()
        history = new[:-1] if new and new[-1] == self.tokenizer.eos_id else new
        conv.ids.extend(history)
        conv.cmp_mask.extend([False] * len(history))
        conv.turns += 1
        raw = generated_text(self.tokenizer, history, self.forcing)
        boxes = parse_boxes(raw, conv.images[0].size, opened=opened_box) if conv.images else []
        text = " ".join(_TAG_RE.sub(" ", raw).split())
        return Turn(text, raw, boxes, out.image_features[0], new)

    def chat(self, question: str, images: Sequence[ImageSource] = (), *, conversation: Conversation | None = None,
             grounding: bool = False, max_new_tokens: int = 512, sampling: Sampling = Sampling(),
             seed: int = 0, grids: Sequence[str] = COMPREHENSION_GRIDS) -> tuple[Turn, Conversation]:
        """One user turn (first turn when `conversation` is None) -> the model's answer; `grids`: the
        any-res grids images are tiled on (those the model was trained with)."""
        self.check_user_text(question, "question")
        pil, anyres = self._anyres(images, grids)
        first = conversation is None
        conv = self.new_conversation() if first else conversation
        if grounding and not (conv.images or pil):
            raise PromptError("grounding needs an image: boxes are measured on the input image")
        texts = self._image_texts(anyres)
        if first:
            text = self.template.ground(question, texts) if grounding else self.template.chat(question, texts)
        else:
            text = self.template.next_turn(question, texts)
        self._add_user_turn(conv, text, pil, anyres, max_new_tokens)
        opened = grounding and first and self.template.grounding_opens_box
        return self._decode(conv, max_new_tokens, sampling, seed, opened_box=opened), conv

    def generate_image(self, caption: str, *, height: int = 1024, width: int = 1024,
                       sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None, seed: int = 0,
                       max_new_tokens: int = 120, sampling: Sampling = Sampling()) -> tuple[Turn, np.ndarray | None]:
        """Text-to-image (flow (b)): uint8 `[H, W, 3]`, or None when the model produced no image."""
        self.check_render(height, width, noise, edits=False)
        turn = self.imagine(caption, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed)
        if not len(turn.image_features):
            return turn, None
        return turn, self._render(turn.image_features[:1], height, width, sampler, noise, seed)[0]

    def imagine(self, caption: str, *, max_new_tokens: int = 120, sampling: Sampling = Sampling(),
                seed: int = 0) -> Turn:
        """The LLM half of text-to-image: the turn whose `image_features` `render` draws (so many
        captions can be rendered as one batch)."""
        self.check_user_text(caption, "caption")
        conv = self.new_conversation()
        self._add_user_turn(conv, self.template.generate(caption), [], [], max_new_tokens)
        return self._decode(conv, max_new_tokens, sampling, seed)

    def edit(self, image: ImageSource, instruction: str, *, height: int = 1024, width: int = 1024,
             sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None, seed: int = 42,
             max_new_tokens: int = 512, sampling: Sampling = Sampling()) -> tuple[Turn, np.ndarray | None]:
        """Instruction editing (flow (c)): source any-res 1x1 in the prompt, stage-2 de-tokenizer."""
        self.check_render(height, width, noise, edits=True)
        self.check_user_text(instruction, "instruction")
        pil, anyres = self._anyres([image], EDIT_GRIDS)
        conv = self.new_conversation()
        self._add_user_turn(conv, self.template.edit_prompt(instruction, self._image_texts(anyres)[0]), pil, anyres,
                            max_new_tokens)
        turn = self._decode(conv, max_new_tokens, sampling, seed)
        if not len(turn.image_features):
            return turn, None
        condition = np.asarray(pil[0].resize((width, height), Image.Resampling.BICUBIC), np.float32)[None] / 255
        return turn, self._render(turn.image_features[:1], height, width, sampler, noise, seed, condition)[0]

    def reconstruct(self, image: ImageSource, *, height: int = 1024, width: int = 1024,
                    sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None,
                    seed: int = 42) -> np.ndarray:
        """De-tokenizer reconstruction (flow (d), path B); a stage-2 de-tokenizer also gets the image
        itself as the condition."""
        edits = self.check_render(height, width, noise, edits=None)
        pil = load_image(image)
        views = jnp.asarray(image_transform(pil, self.image_size)[None])
        condition = None
        if edits:
            condition = jnp.asarray(np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC), np.float32)[None] / 255)
        with self.progress.stage(f"reconstructing at {width}x{height}, {sampler.num_steps} steps"), \
                reporting(self.progress):
            out = self.detokenizer.reconstruct(self.vit, views, height=height, width=width, sampler=sampler,
                                               condition_images=condition, noise=_as_jnp(noise), seed=seed,
                                               progress=True)
        return to_uint8(out)[0]

    # -- de-tokenizer --------------------------------------------------------------------------

    def check_render(self, height: int, width: int, noise, *, edits: bool | None) -> bool:
        """Cheap checks of a render request (edits: needs stage 2 / stage 1 / either) -> stage 2?"""
        if self.detokenizer is None:
            raise CheckpointError("this checkpoint has no de-tokenizer/: images cannot be rendered")
        dcfg = self.detokenizer.config
        if edits is True and not dcfg.edits:
            raise CheckpointError("editing needs a stage-2 de-tokenizer (8-channel U-Net input)")
        if edits is False and dcfg.edits:
            raise CheckpointError("text-to-image needs a stage-1 de-tokenizer; this checkpoint holds stage 2")
        f = dcfg.pixel_factor
        for name, v in (("height", height), ("width", width)):
            if v <= 0 or v % f:
                raise ValueError(f"{name}={v} must be a positive multiple of {f}")
        if noise is not None:
            d = dcfg.vae.downsample_factor
            want = (1, height // d, width // d, dcfg.unet.out_channels)
            if tuple(np.shape(noise)) != want:
                raise ValueError(f"noise has shape {tuple(np.shape(noise))}; {width}x{height} needs {want} (NHWC)")
        return dcfg.edits

    @property
    def renders_text_to_image(self) -> bool:
        """A stage-1 de-tokenizer is loaded (generated images can be drawn)."""
        return self.detokenizer is not None and not self.detokenizer.config.edits

    def render(self, features: np.ndarray, *, height: int = 1024, width: int = 1024,
               sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
        """Regressed features `[k, 64, C]` (e.g. `Turn.image_features`) -> uint8 images `[k, H, W, 3]`
        through the stage-1 de-tokenizer; `noise` (`[1, h, w, 4]`) is shared by the k images."""
        self.check_render(height, width, noise, edits=False)
        if noise is not None:
            noise = np.broadcast_to(noise, (len(features), *np.shape(noise)[1:]))
        return self._render(features, height, width, sampler, noise, seed)

    def _render(self, features: np.ndarray, height: int, width: int, sampler: SamplerConfig, noise, seed: int,
                condition: np.ndarray | None = None) -> np.ndarray:
        if self._negative is None:
            self._negative = negative_features(self.vit, pooled=True)
        with self.progress.stage(f"rendering {len(features)} image(s) at {width}x{height}, {sampler.num_steps} steps"), \
                reporting(self.progress):
            images = self.detokenizer.generate(jnp.asarray(features), self._negative, height=height, width=width,
                                               sampler=sampler, condition_images=_as_jnp(condition),
                                               noise=_as_jnp(noise), seed=seed, progress=True)
        return to_uint8(images)


def _as_jnp(x):
    return None if x is None else jnp.asarray(x, jnp.float32)


def _between_pairs(ids: list[int], tokenizer: SeedXTokenizer) -> list[bool]:
    """Positions strictly between each opener (`<img>`/`<patch>`) and its closer, zipped in order
    (the official inference rule, §8)."""
    opener_ids = {tokenizer.token_id(T.IMG_START), tokenizer.token_id(T.PATCH_START)}
    closer_ids = {tokenizer.token_id(T.IMG_END), tokenizer.token_id(T.PATCH_END)}
    openers = [i for i, t in enumerate(ids) if t in opener_ids]
    closers = [i for i, t in enumerate(ids) if t in closer_ids]
    mask = [False] * len(ids)
    for start, end in zip(openers, closers):
        for i in range(start + 1, end):
            mask[i] = True
    return mask


def draw_boxes(image: Image.Image, boxes: Sequence[Box], color=(255, 0, 0)) -> Image.Image:
    """A copy of `image` with `boxes` outlined."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, min(image.size) // 200)
    for box in boxes:
        draw.rectangle(box, outline=color, width=width)
    return out
