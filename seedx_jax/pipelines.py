"""`SeedX`: comprehension (any-res images, grounding, multi-turn), text-to-image, editing and
de-tokenizer reconstruction on one checkpoint (the data flows (a)-(d) of docs/architecture.md).

Every input is checked before anything is compiled, and the checks need no weights (`SeedX.open` +
`prepare_*`, then `load_weights`): images decode (one-line errors naming the input), user text is
not empty and holds no image-structure or control tokens, boxes need an image, the prompt fits the
context, `max_new_tokens` can hold an image where one is drawn, an explicit noise array has the
latent shape of the requested size, seeds are in range. Non-finite features or images raise
`NonFiniteError` instead of becoming a black picture.
"""
from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from PIL import Image, ImageDraw

from seedx_jax import tokens as T
from seedx_jax.agent.boxes import Box, parse_boxes
from seedx_jax.agent.generate import AgentGenerator, ImageTokenForcing, generated_text
from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.prompts import TAG_RE, PromptError, check_user_text, get_template
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import (KINDS, PIPELINE_PARTS, CheckpointError, load_model, pipeline_component,
                                  read_manifest, read_pipeline_manifest)
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig, negative_features, to_uint8
from seedx_jax.diffusion.sampling import SamplerConfig, check_seed
from seedx_jax.generate_batch import BatchDecoding
from seedx_jax.llama.generate import Sampling
from seedx_jax.llama.layout import unstack_agent_layers
from seedx_jax.numerics import check_finite, nonfinite_counts
from seedx_jax.precision import Precision
from seedx_jax.progress import Progress, reporting
from seedx_jax.sharding import Rules
from seedx_jax.vision.anyres import COMPREHENSION_GRIDS, EDIT_GRIDS, AnyResImage, image_transform, process_anyres
from seedx_jax.vision.encode import ViewEncoder
from seedx_jax.vision.image_io import ImageSource, load_image
from seedx_jax.vision.vit import QwenViT, VisionConfig

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
    raw_text: str  # generated text as decoded (tags kept; image token spans dropped, as official)
    boxes: list[Box]  # grounding: pixel boxes on the first input image
    image_features: np.ndarray  # [k, 64, C] features of the k images the model generated
    token_ids: list[int]  # the generated ids (a forced `<img>` is the prompt's, not here)
    cut_off: bool = False  # max_new_tokens ended the answer inside an image span (no features for it)


class SeedX(BatchDecoding):
    """One SEED-X checkpoint: tokenizer, ViT, agent and (optionally) a de-tokenizer.

    `SeedX.open(path)` reads only the manifests, configs and tokenizer; every `check_*` / `prepare_*`
    works on it, so a command can refuse bad input before the weights load (`load_weights`).
    `SeedX.load(path)` does both.
    """

    def __init__(self, tokenizer: SeedXTokenizer, vit: QwenViT | None, agent: SeedXAgent | None,
                 detokenizer: Detokenizer | None = None, *, template: str = "seed_x_i",
                 progress: Progress | None = None, configs: PipelineConfigs | None = None):
        configs = configs or PipelineConfigs(vit.config, agent.config, detokenizer and detokenizer.config)
        acfg = configs.agent
        if tokenizer.vocab_size != acfg.llm.vocab_size:
            raise CheckpointError(f"tokenizer has {tokenizer.vocab_size} ids but the LLM vocabulary is "
                                  f"{acfg.llm.vocab_size}")
        if configs.vit.output_dim != acfg.feature_dim:
            raise CheckpointError(f"ViT output_dim={configs.vit.output_dim} != agent feature size {acfg.feature_dim}")
        if configs.detokenizer is not None and configs.detokenizer.resampler.embedding_dim != acfg.feature_dim:
            raise CheckpointError(f"de-tokenizer takes {configs.detokenizer.resampler.embedding_dim}-d features, "
                                  f"the agent regresses {acfg.feature_dim}-d")
        self.tokenizer, self.configs = tokenizer, configs
        self.vit, self.agent, self.detokenizer = vit, agent, detokenizer
        self.template = get_template(template)
        self.progress = progress or Progress(quiet=True)
        self.forcing = ImageTokenForcing.from_tokenizer(tokenizer, acfg.num_image_tokens)
        self.encoder = ViewEncoder(vit) if vit is not None else None
        self._generator = AgentGenerator(agent) if agent is not None else None  # split once, not per turn
        self._negative = None
        self._dirs: dict[str, str] = {}

    @classmethod
    def open(cls, path: str, *, template: str | None = None, progress: Progress | None = None) -> "SeedX":
        """The pipeline directory `path` (`seedx_jax.checkpoint.save_pipeline`, or a converted release's
        `seed_x_i/`...) without its weights: manifests, configs, tokenizer (a path as typed).

        Raises:
          CheckpointError: not a pipeline, a part missing, parts that do not fit together.
        """
        manifest = read_pipeline_manifest(path)
        dirs = {part: pipeline_component(path, manifest, part) for part in PIPELINE_PARTS}
        for part in ("tokenizer", "vit", "agent"):
            if not os.path.isdir(dirs[part]):
                raise CheckpointError(f"{path} lacks its {part} directory ({dirs[part]})")
        has_detokenizer = os.path.isdir(dirs["detokenizer"])
        configs = PipelineConfigs(*(model_config(dirs[part], part) if part != "detokenizer" or has_detokenizer
                                    else None for part in ("vit", "agent", "detokenizer")))
        pipe = cls(SeedXTokenizer.from_dir(dirs["tokenizer"]), None, None, None,
                   template=template or manifest["template"], progress=progress, configs=configs)
        pipe._dirs = {part: d for part, d in dirs.items() if part != "detokenizer" or has_detokenizer}
        return pipe

    def load_weights(self, *, mesh: Mesh | None = None, rules: Rules | None = None,
                     precision: Precision | None = None, detokenizer: bool = True) -> "SeedX":
        """Load the models of a pipeline from `open`; with `mesh`, every parameter is restored straight
        into its sharding (a model larger than one device's memory); `precision`: bf16 compute and/or
        int8 LLM weights (`seedx_jax.precision`). `detokenizer=False` leaves the de-tokenizer on disk
        (answers in text only, e.g. benchmark questions: no memory or load time for SDXL's U-Net and
        VAE); a later call with True loads it."""
        if self.agent is None:
            self.vit = load_model(self._dirs["vit"], "vit", mesh=mesh, rules=rules)
            self.agent = load_model(self._dirs["agent"], "agent", mesh=mesh, rules=rules)
            if precision is None or precision.llm_weights == "float":  # int8 weights decode faster scanned
                unstack_agent_layers(self.agent)  # the serving layout (seedx_jax/llama/layout.py)
            if precision is not None:
                self.vit, self.agent = precision.apply(self.vit), precision.apply(self.agent)
            self.encoder = ViewEncoder(self.vit)
            self._generator = AgentGenerator(self.agent)  # after `precision`: it keeps the converted model
        if detokenizer and self.detokenizer is None and "detokenizer" in self._dirs:
            self.detokenizer = load_model(self._dirs["detokenizer"], "detokenizer", mesh=mesh, rules=rules)
            if precision is not None:
                self.detokenizer = precision.apply(self.detokenizer)
        return self

    @classmethod
    def load(cls, path: str, *, template: str | None = None, progress: Progress | None = None,
             mesh: Mesh | None = None, rules: Rules | None = None) -> "SeedX":
        """`open(path)` and `load_weights(mesh=mesh)`."""
        return cls.open(path, template=template, progress=progress).load_weights(mesh=mesh, rules=rules)

    # -- inputs --------------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        return self.configs.vit.image_size

    def check_user_text(self, text: str, name: str = "prompt") -> str:
        """`seedx_jax.agent.prompts.check_user_text` with this pipeline's tokenizer."""
        return check_user_text(self.tokenizer, text, name)

    def check_max_new_tokens(self, max_new_tokens: int, *, draws: bool = False, opened: bool = False) -> None:
        """`max_new_tokens` is a positive int; one that has to hold an image (`draws`) holds a whole image
        span, or its rest when the prompt `opened` it (ends in `<img>`: forced, or the base template's).

        Raises:
          PromptError: not positive; (`draws`) fewer than `<img>` + the image tokens + `</img>`;
            (`opened`) fewer than the image tokens + `</img>`.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens < 1:
            raise PromptError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
        n = self.configs.agent.num_image_tokens
        if opened and max_new_tokens < n + 1:
            raise PromptError(f"max_new_tokens={max_new_tokens} cannot hold an image: the answer starts with "
                              f"<img>, then needs {n} image tokens and </img> ({n + 1} tokens)")
        if draws and not opened and max_new_tokens < n + 2:
            raise PromptError(f"max_new_tokens={max_new_tokens} cannot hold an image (<img>, "
                              f"{n} image tokens, </img>: {n + 2} tokens)")

    def _anyres(self, images: Sequence[ImageSource], grids) -> tuple[list[Image.Image], list[AnyResImage]]:
        pil = [load_image(src) for src in images]
        return pil, [process_anyres(im, grids, base=self.image_size) for im in pil]

    def new_conversation(self) -> Conversation:
        return Conversation(ids=[self.tokenizer.bos_id], cmp_mask=[False])

    def _user_turn(self, conv: Conversation, text: str, anyres: list[AnyResImage], max_new_tokens: int, *,
                   draws: bool = False, force_image: bool = False) -> tuple[list[int], list[bool]]:
        """(ids, image-slot mask) of a user turn appended to `conv`, checked (context, slots) without
        changing `conv` or running a model. `force_image`: the ids end in `<img>`, so the answer is an
        image (the official demo's switch; appended as an id, after the template's assistant prefix)."""
        ids = self.tokenizer.encode(text)
        opener = self.forcing.span[0]
        if force_image and ids[-1:] != [opener]:  # the base model's text-to-image prompt ends in <img> already
            ids.append(opener)
        self.check_max_new_tokens(max_new_tokens, draws=draws, opened=ids[-1:] == [opener])
        ctx = self.configs.agent.llm.max_position_embeddings
        t = len(conv.ids) + len(ids)
        if t + max_new_tokens > ctx:
            raise PromptError(f"prompt has {t} tokens; with max_new_tokens={max_new_tokens} it exceeds the "
                              f"context of {ctx} positions")
        mask = _between_pairs(ids, self.tokenizer)
        views = sum(a.num_views for a in anyres)
        n = self.configs.agent.num_image_tokens
        if sum(mask) != views * n:
            raise PromptError(f"prompt has {sum(mask)} image placeholder slots, its {views} image views need {views * n}")
        return ids, mask

    def _add_user_turn(self, conv: Conversation, turn: "UserTurn") -> None:
        if turn.anyres:
            views = sum(a.num_views for a in turn.anyres)
            with self.progress.stage(f"encoding {len(turn.anyres)} image(s), {views} views"):
                feats = self.encoder(np.concatenate([a.pixels for a in turn.anyres]))
            conv.features.extend(np.asarray(feats))
            conv.positions.extend(np.concatenate([a.positions for a in turn.anyres]))
            conv.images.extend(turn.images)
        conv.ids.extend(turn.ids)
        conv.cmp_mask.extend(turn.mask)

    def _image_texts(self, anyres: list[AnyResImage]) -> list[str]:
        return [T.anyres_image_text(a.num_tiles, self.configs.agent.num_image_tokens) for a in anyres]

    # -- requests, checked without running a model -------------------------------------------------

    def prepare_chat(self, question: str, images: Sequence[ImageSource] = (), *,
                     conversation: Conversation | None = None, grounding: bool = False, max_new_tokens: int = 512,
                     grids: Sequence[str] = COMPREHENSION_GRIDS, force_image: bool = False) -> "UserTurn":
        """Every check of `chat` (text, images, grounding, context, room for a forced image), nothing run.

        Raises:
          PromptError, ImageInputError: the first problem, naming the input.
        """
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
        ids, mask = self._user_turn(conv, text, anyres, max_new_tokens, force_image=force_image)
        return UserTurn(ids, mask, pil, anyres, opened_box=grounding and first and self.template.grounding_opens_box)

    def prepare_generate(self, caption: str, *, max_new_tokens: int = 120, height: int = 1024, width: int = 1024,
                         noise: np.ndarray | None = None, renders: bool = True, force_image: bool = False
                         ) -> "UserTurn":
        """Every check of `generate_image` (`renders`) or `imagine`, nothing run: `check_generate`, then
        the caption's (text, context)."""
        self.check_generate(max_new_tokens=max_new_tokens, height=height, width=width, noise=noise, renders=renders,
                            force_image=force_image)
        self.check_user_text(caption, "caption")
        ids, mask = self._user_turn(self.new_conversation(), self.template.generate(caption), [], max_new_tokens,
                                    draws=True, force_image=force_image)
        return UserTurn(ids, mask, [], [])

    def check_generate(self, *, max_new_tokens: int = 120, height: int = 1024, width: int = 1024,
                       noise: np.ndarray | None = None, renders: bool = True, force_image: bool = False) -> None:
        """The checks of a text-to-image request that do not depend on its caption (size and noise when it
        `renders`, room for an image in `max_new_tokens`): CheckpointError, ValueError or PromptError."""
        if renders:
            self.check_render(height, width, noise, edits=False)
        opened = force_image or self.template.generate("x").endswith(T.IMG_START)
        self.check_max_new_tokens(max_new_tokens, draws=True, opened=opened)

    def prepare_edit(self, image: ImageSource, instruction: str, *, max_new_tokens: int = 512, height: int = 1024,
                     width: int = 1024, noise: np.ndarray | None = None, force_image: bool = False) -> "UserTurn":
        """Every check of `edit`, nothing run."""
        self.check_render(height, width, noise, edits=True)
        self.check_user_text(instruction, "instruction")
        self.check_max_new_tokens(max_new_tokens, draws=True, opened=force_image)
        pil, anyres = self._anyres([image], EDIT_GRIDS)
        text = self.template.edit_prompt(instruction, self._image_texts(anyres)[0])
        ids, mask = self._user_turn(self.new_conversation(), text, anyres, max_new_tokens, draws=True,
                                    force_image=force_image)
        return UserTurn(ids, mask, pil, anyres)

    # -- generation ----------------------------------------------------------------------------

    def _decode(self, conv: Conversation, max_new_tokens: int, sampling: Sampling, seed: int, *,
                opened_box: bool = False) -> Turn:
        images = dict(cmp_mask=[conv.cmp_mask], cmp_features=np.stack(conv.features),
                      cmp_positions=np.stack(conv.positions)) if conv.features else {}
        stage = f"generating (prompt {len(conv.ids)} tokens, at most {max_new_tokens} new)"
        (turn,) = self._decode_rows([conv.ids], max_new_tokens, sampling, seed, stage=stage, opened_box=opened_box,
                                    box_images=[conv.images[0] if conv.images else None], **images)
        history = self._without_stop(turn.token_ids)
        conv.ids.extend(history)
        conv.cmp_mask.extend([False] * len(history))
        conv.turns += 1
        return turn

    def _answer(self, prompt: Sequence[int], new: list[int], features: np.ndarray, box_image: Image.Image | None,
                opened_box: bool) -> Turn:
        """The answer `new` (generated ids, stop token included) to `prompt`: texts, boxes on `box_image`,
        the regressed `features` `[k, 64, C]`, whether it ended inside an image."""
        history = self._without_stop(new)
        raw = generated_text(self.tokenizer, history, self.forcing)
        boxes = parse_boxes(raw, box_image.size, opened=opened_box) if box_image is not None else []
        text = " ".join(TAG_RE.sub(" ", raw).split())
        check_finite(features, "the image features the LLM regressed")
        opener = self.forcing.span[0]  # a prompt ending in <img> opened the answer's first image
        cut_off = history.count(opener) + (prompt[-1] == opener) > len(features)  # ended inside <img> ... </img>
        return Turn(text, raw, boxes, features, new, cut_off)

    def _without_stop(self, new: list[int]) -> list[int]:
        return new[:-1] if new and new[-1] == self.tokenizer.eos_id else new

    def chat(self, question: str, images: Sequence[ImageSource] = (), *, conversation: Conversation | None = None,
             grounding: bool = False, max_new_tokens: int = 512, sampling: Sampling = Sampling(),
             seed: int = 0, grids: Sequence[str] = COMPREHENSION_GRIDS,
             force_image: bool = False) -> tuple[Turn, Conversation]:
        """One user turn (first turn when `conversation` is None) -> the model's answer; `grids`: the
        any-res grids images are tiled on (those the model was trained with); `force_image`: the answer
        starts with `<img>` (kept in the history), so it is an image (`max_new_tokens` >= the image tokens
        + 1). A refused turn (see `prepare_chat`) leaves `conversation` as it was."""
        turn = self.prepare_chat(question, images, conversation=conversation, grounding=grounding,
                                 max_new_tokens=max_new_tokens, grids=grids, force_image=force_image)
        check_seed(seed)
        conv = self.new_conversation() if conversation is None else conversation
        self._need_weights()
        self._add_user_turn(conv, turn)
        return self._decode(conv, max_new_tokens, sampling, seed, opened_box=turn.opened_box), conv

    def generate_image(self, caption: str, *, height: int = 1024, width: int = 1024,
                       sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None, seed: int = 0,
                       max_new_tokens: int = 120, sampling: Sampling = Sampling(),
                       force_image: bool = False) -> tuple[Turn, np.ndarray | None]:
        """Text-to-image (flow (b)): uint8 `[H, W, 3]`, or None when the model produced no image (see
        `Turn.cut_off`; `force_image` starts the answer with `<img>`). Raises `NonFiniteError` rather than
        drawing from NaN/Inf values. Many captions: `generate_images`."""
        self.prepare_generate(caption, max_new_tokens=max_new_tokens, height=height, width=width, noise=noise,
                              force_image=force_image)
        turn = self.imagine(caption, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed,
                            force_image=force_image)
        if not len(turn.image_features):
            return turn, None
        return turn, self._render(turn.image_features[:1], height, width, sampler, noise, seed)[0]

    def imagine(self, caption: str, *, max_new_tokens: int = 120, sampling: Sampling = Sampling(),
                seed: int = 0, force_image: bool = False) -> Turn:
        """The LLM half of text-to-image: the turn whose `image_features` `render` draws (so many
        captions can be rendered as one batch)."""
        turn = self.prepare_generate(caption, max_new_tokens=max_new_tokens, renders=False, force_image=force_image)
        check_seed(seed)
        conv = self.new_conversation()
        self._need_weights()
        self._add_user_turn(conv, turn)
        return self._decode(conv, max_new_tokens, sampling, seed)

    def edit(self, image: ImageSource, instruction: str, *, height: int = 1024, width: int = 1024,
             sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None, seed: int = 42,
             max_new_tokens: int = 512, sampling: Sampling = Sampling(),
             force_image: bool = False) -> tuple[Turn, np.ndarray | None]:
        """Instruction editing (flow (c)): source any-res 1x1 in the prompt, stage-2 de-tokenizer;
        `force_image`: the answer starts with `<img>`."""
        turn = self.prepare_edit(image, instruction, max_new_tokens=max_new_tokens, height=height, width=width,
                                 noise=noise, force_image=force_image)
        check_seed(seed)
        conv = self.new_conversation()
        self._need_weights()
        self._add_user_turn(conv, turn)
        answer = self._decode(conv, max_new_tokens, sampling, seed)
        if not len(answer.image_features):
            return answer, None
        condition = np.asarray(turn.images[0].resize((width, height), Image.Resampling.BICUBIC), np.float32)[None] / 255
        return answer, self._render(answer.image_features[:1], height, width, sampler, noise, seed, condition)[0]

    def reconstruct(self, image: ImageSource, *, height: int = 1024, width: int = 1024,
                    sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None,
                    seed: int = 42) -> np.ndarray:
        """De-tokenizer reconstruction (flow (d), path B); a stage-2 de-tokenizer also gets the image
        itself as the condition."""
        edits = self.check_render(height, width, noise, edits=None)
        check_seed(seed)
        pil = load_image(image)
        self._need_weights()
        views = jnp.asarray(image_transform(pil, self.image_size)[None])
        condition = None
        if edits:
            condition = jnp.asarray(np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC), np.float32)[None] / 255)
        with self.progress.stage(f"reconstructing at {width}x{height}, {sampler.num_steps} steps"), \
                reporting(self.progress):
            out = self.detokenizer.reconstruct(self.vit, views, height=height, width=width, sampler=sampler,
                                               condition_images=condition, noise=_as_jnp(noise), seed=seed,
                                               progress=True)
        check_finite(out, "the reconstructed image")
        return to_uint8(out)[0]

    # -- de-tokenizer --------------------------------------------------------------------------

    def check_render(self, height: int, width: int, noise, *, edits: bool | None) -> bool:
        """Cheap checks of a render request (edits: needs stage 2 / stage 1 / either) -> stage 2?"""
        dcfg = self.configs.detokenizer
        if dcfg is None:
            raise CheckpointError("this checkpoint has no de-tokenizer/: images cannot be rendered")
        if edits is True and not dcfg.edits:
            raise CheckpointError("editing needs a stage-2 de-tokenizer (8-channel U-Net input)")
        if edits is False and dcfg.edits:
            raise CheckpointError("text-to-image needs a stage-1 de-tokenizer; this checkpoint holds stage 2")
        f = dcfg.pixel_factor
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % f:
                raise ValueError(f"{name}={v!r} must be a positive multiple of {f}")
        if noise is not None:
            d = dcfg.vae.downsample_factor
            want = (1, height // d, width // d, dcfg.unet.out_channels)
            if tuple(np.shape(noise)) != want:
                raise ValueError(f"noise has shape {tuple(np.shape(noise))}; {width}x{height} needs {want} (NHWC)")
            nan, inf = nonfinite_counts(noise)
            if nan or inf:  # the user's input: a ValueError, not a NonFiniteError of ours
                raise ValueError(f"the noise array holds {nan} NaN and {inf} infinite values")
        return dcfg.edits

    @property
    def renders_text_to_image(self) -> bool:
        """A stage-1 de-tokenizer is part of the pipeline (generated images can be drawn)."""
        return self.configs.detokenizer is not None and not self.configs.detokenizer.edits

    def render(self, features: np.ndarray, *, height: int = 1024, width: int = 1024,
               sampler: SamplerConfig = SamplerConfig(), noise: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
        """Regressed features `[k, 64, C]` (e.g. `Turn.image_features`) -> uint8 images `[k, H, W, 3]`
        through the stage-1 de-tokenizer; `noise` (`[1, h, w, 4]`) is shared by the k images.

        Raises:
          ValueError: features not `[k, n, C]` with the agent's C, or a bad size / noise.
          NonFiniteError: the features or the sampled images hold NaN or Inf.
        """
        self.check_render(height, width, noise, edits=False)
        check_seed(seed)
        c = self.configs.agent.feature_dim
        if np.ndim(features) != 3 or np.shape(features)[0] < 1 or np.shape(features)[-1] != c:
            raise ValueError(f"features have shape {np.shape(features)}; render takes [k, tokens, {c}]")
        check_finite(features, "the features to render")
        if noise is not None:
            noise = np.broadcast_to(noise, (len(features), *np.shape(noise)[1:]))
        return self._render(features, height, width, sampler, noise, seed)

    def _render(self, features: np.ndarray, height: int, width: int, sampler: SamplerConfig, noise, seed: int,
                condition: np.ndarray | None = None, *, stage: str | None = None) -> np.ndarray:
        self._need_weights()
        if self._negative is None:
            self._negative = negative_features(self.vit, pooled=True)
        stage = stage or f"rendering {len(features)} image(s) at {width}x{height}, {sampler.num_steps} steps"
        with self.progress.stage(stage), reporting(self.progress):
            images = self.detokenizer.generate(jnp.asarray(features), self._negative, height=height, width=width,
                                               sampler=sampler, condition_images=_as_jnp(condition),
                                               noise=_as_jnp(noise), seed=seed, progress=True)
        check_finite(images, "the de-tokenizer's output image")
        return to_uint8(images)

    def _need_weights(self) -> None:
        if self.agent is None:
            raise RuntimeError("SeedX.open() reads no weights: call load_weights() before generating")


class PipelineConfigs(NamedTuple):
    vit: VisionConfig
    agent: AgentConfig
    detokenizer: DetokenizerConfig | None


class UserTurn(NamedTuple):
    """A checked user turn (`SeedX.prepare_*`): its token ids, image-slot mask and images."""

    ids: list[int]
    mask: list[bool]
    images: list[Image.Image]
    anyres: list[AnyResImage]
    opened_box: bool = False  # the prompt ends inside a box (the base model's grounding template)


def model_config(path: str, kind: str):
    """The config of the model checkpoint at `path` from its manifest (nothing loaded)."""
    config_cls = KINDS[kind][0]
    return config_cls.from_dict(read_manifest(path, kind)["config"])


def _as_jnp(x):
    return None if x is None else jnp.asarray(x, jnp.float32)


def _between_pairs(ids: list[int], tokenizer: SeedXTokenizer) -> list[bool]:
    """Positions strictly between each opener (`<img>`/`<patch>`) and its closer, zipped in order
    (the official inference rule, docs/tokenizer.md)."""
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
