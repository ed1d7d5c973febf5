"""Decoding prompts as one batch, and text-to-image for many captions (`SeedX.generate_images`).

`BatchDecoding` is a part of `seedx_jax.pipelines.SeedX` (a base class of it, kept here to keep that
module small): every decode of the pipelines goes through `_decode_rows`, one right-padded `[B, T]`
batch per call.

`generate_images` decodes the captions `batch_size` rows at a time, then renders their images
`render_batch_size` at a time. Every batch is padded with copies of its last row to the full size, and
every prompt to the length bucket of the longest caption, so that one compiled program serves every
batch of a run. What the results depend on:

* greedy decoding (the released setting): a row's answer depends only on its prompt (rows are
  right-padded, attention never crosses rows), so the features of a caption do not depend on the
  other captions; the `num_images_per_prompt` images of a caption share them.
* image k of a caption starts from its own noise, `draw_noise((seed + k) mod 2**32)`: the noise
  `SeedX.generate_image(caption, seed=seed + k)` draws, not one drawn for the batch.
* bitwise, XLA picks its kernels by shape: rows of batches of different sizes can differ in their last
  bits (enough to move a pixel by 1), the place of a row in a batch does not matter. So the
  de-tokenizer's batch is its own setting, `render_batch_size` (default 1: the program
  `generate_image` runs), not `batch_size`: an image's pixels do not change with `batch_size` or the
  other captions beyond what the last bits of its features carry (nothing, on the scripted test models).
* sampled decoding (temperature > 0) draws one random key per step for a whole batch, so an answer
  depends on its row's place in the batch: each image gets a row of its own, and the answers repeat for
  the same captions, batch size and seed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
from PIL import Image

from seedx_jax.agent.prompts import PromptError
from seedx_jax.diffusion.sampling import SamplerConfig, check_seed, draw_noise
from seedx_jax.llama.generate import Sampling
from seedx_jax.progress import reporting

if TYPE_CHECKING:
    from seedx_jax.pipelines import Turn, UserTurn

PROMPT_BUCKET = 64  # prompts are right-padded to a multiple of this: one decode program per bucket


class GeneratedImage(NamedTuple):
    index: int  # k: the caption's k-th image, in [0, num_images_per_prompt)
    seed: int  # its noise seed, (seed + k) mod 2**32
    pixels: np.ndarray  # uint8 [H, W, 3]


class CaptionImages(NamedTuple):
    """What `generate_images` made of one caption."""

    turns: list[Turn]  # greedy decoding: [the answer] (its image's features are shared); sampling: one per image
    images: list[GeneratedImage]  # by index; empty when no answer held an image (see each Turn's `cut_off`)


class BatchDecoding:
    """The batched decoding of `SeedX` (see the module docstring)."""

    def _padded_length(self, longest: int, max_new_tokens: int) -> int:
        """The prompt length `[B, T]` batches are padded to: the bucket of the `longest` prompt, within the
        context left by `max_new_tokens`."""
        ctx = self.configs.agent.llm.max_position_embeddings
        return min(-(-longest // PROMPT_BUCKET) * PROMPT_BUCKET, ctx - max_new_tokens)

    def _decode_rows(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling, seed: int, *,
                     stage: str, length: int | None = None, cmp_mask: Sequence[Sequence[bool]] | None = None,
                     cmp_features=None, cmp_positions=None,
                     box_images: Sequence[Image.Image | None] | None = None,
                     opened_box: Sequence[bool] | bool = False) -> list[Turn]:
        """Checked prompts (BOS first) right-padded to `length` (default: `_padded_length`) as one batch ->
        one answer per row; `cmp_*`: the comprehension images of the rows, in slot order; `box_images`:
        per row, the image its boxes are measured on (None: no boxes)."""
        self._need_weights()
        length = length or self._padded_length(max(map(len, prompts)), max_new_tokens)
        ids = np.zeros((len(prompts), length), np.int32)
        mask = np.zeros((len(prompts), length), bool)
        for row, prompt in enumerate(prompts):
            ids[row, :len(prompt)] = prompt
            if cmp_mask is not None:
                mask[row, :len(prompt)] = cmp_mask[row]
        images = dict(ids_cmp_mask=mask, cmp_features=cmp_features, cmp_positions=cmp_positions) \
            if cmp_features is not None else {}
        with self.progress.stage(stage), reporting(self.progress):
            out = self._generator(ids, prompt_lengths=[len(p) for p in prompts], max_new_tokens=max_new_tokens,
                                  forcing=self.forcing, stop_token_ids=[self.tokenizer.eos_id], sampling=sampling,
                                  seed=seed, pad_token_id=self.tokenizer.pad_id, progress=True, **images)
        box_images = box_images or [None] * len(prompts)
        opened = [opened_box] * len(prompts) if isinstance(opened_box, bool) else opened_box
        return [self._answer(prompt, out.tokens[row, :out.num_tokens[row]].tolist(), out.image_features[row],
                             box_images[row], opened[row]) for row, prompt in enumerate(prompts)]

    def answer_batch(self, turns: Sequence[UserTurn], *, max_new_tokens: int, batch_size: int | None = None,
                     sampling: Sampling = Sampling(), seed: int = 0, stage: str = "answering") -> list[Turn]:
        """First turns checked by `prepare_chat` (each a conversation of its own) -> their answers, decoded
        `batch_size` rows at a time (default: all at once; the last batch padded with copies of its last
        row, so one program serves every batch). Each turn's images are encoded on their own, as `chat`
        encodes them; boxes are measured on each turn's first image."""
        self._need_weights()
        turns = list(turns)
        size = batch_size or len(turns)
        answers = []
        for j, (batch, padded) in enumerate(_batches(turns, size)):
            features, positions = [], []
            for turn in padded:
                if turn.anyres:
                    features.append(np.asarray(self.encoder(np.concatenate([a.pixels for a in turn.anyres]))))
                    positions.append(np.concatenate([a.positions for a in turn.anyres]))
            images = dict(cmp_mask=[[False, *t.mask] for t in padded], cmp_features=np.concatenate(features),
                          cmp_positions=np.concatenate(positions)) if features else {}
            rows = self._decode_rows([[self.tokenizer.bos_id, *t.ids] for t in padded], max_new_tokens, sampling,
                                     (seed + j) % 2 ** 32, stage=f"{stage}: batch {j + 1}, {len(batch)} row(s)",
                                     box_images=[t.images[0] if t.images else None for t in padded],
                                     opened_box=[t.opened_box for t in padded], **images)
            answers += rows[:len(batch)]
        return answers

    def generate_images(self, captions: Sequence[str], *, num_images_per_prompt: int = 1, batch_size: int = 4,
                        render_batch_size: int = 1, height: int = 1024, width: int = 1024,
                        sampler: SamplerConfig = SamplerConfig(), seed: int = 0, max_new_tokens: int = 120,
                        sampling: Sampling = Sampling(), force_image: bool = False) -> list[CaptionImages]:
        """Text-to-image for many captions: `num_images_per_prompt` uint8 `[height, width, 3]` images each.
        The LLM decodes `batch_size` rows at a time (a row is a caption under greedy decoding, one image
        of a caption under sampling), the de-tokenizer renders `render_batch_size` images at a time (see
        the module docstring for what a result depends on). An answer without an image gives no
        images, not an error; `force_image` starts every answer with `<img>`.

        Returns:
          per caption, in order, its `CaptionImages`.

        Raises:
          ValueError: no captions (or one string for the list), counts that are not positive integers, a
            bad size, seed or sampler; PromptError: a caption refused by `prepare_generate`, named by
            its index (`captions[3]: ...`); CheckpointError: no stage-1 de-tokenizer;
            NonFiniteError: NaN/Inf features or images.
        """
        if isinstance(captions, str):
            raise ValueError("captions is one string; pass a list of captions")
        captions = list(captions)
        if not captions:
            raise ValueError("captions is empty")
        for name, value in (("num_images_per_prompt", num_images_per_prompt), ("batch_size", batch_size),
                            ("render_batch_size", render_batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        check_seed(seed)
        self.check_generate(max_new_tokens=max_new_tokens, height=height, width=width, force_image=force_image)
        prompts = []
        for i, caption in enumerate(captions):
            try:
                turn = self.prepare_generate(caption, max_new_tokens=max_new_tokens, renders=False,
                                             force_image=force_image)
            except PromptError as err:
                raise PromptError(f"captions[{i}]: {err}") from None
            prompts.append([self.tokenizer.bos_id, *turn.ids])
        self._need_weights()
        # greedy: one row per caption, its images share the features; sampling: one row per image
        per_caption = 1 if sampling.greedy else num_images_per_prompt
        rows = [(i, r) for i in range(len(captions)) for r in range(per_caption)]
        length = self._padded_length(max(map(len, prompts)), max_new_tokens)
        answers = {}
        batches = _batches(rows, batch_size)
        for j, (batch, padded) in enumerate(batches):
            stage = f"decoding batch {j + 1}/{len(batches)}: {len(batch)} answer(s), at most {max_new_tokens} " \
                    "tokens each"
            seed_j = (seed + j) % 2 ** 32  # sampling: another key per batch; greedy: unused
            turns = self._decode_rows([prompts[i] for i, _ in padded], max_new_tokens, sampling, seed_j,
                                      stage=stage, length=length)
            answers.update(zip(batch, turns))
        return self._render_answers(answers, len(captions), num_images_per_prompt, per_caption, render_batch_size,
                                    height, width, sampler, seed)

    def _render_answers(self, answers: dict, count: int, n: int, per_caption: int, batch_size: int, height: int,
                        width: int, sampler: SamplerConfig, seed: int) -> list[CaptionImages]:
        """Render the first image of each answer, `batch_size` at a time -> the results by caption."""
        jobs = []  # (caption, k, features of the answer's first image), as generate_image draws it
        for i in range(count):
            for k in range(n):
                features = answers[i, k if per_caption > 1 else 0].image_features
                if len(features):
                    jobs.append((i, k, features[0]))
        dcfg = self.configs.detokenizer
        d = dcfg.vae.downsample_factor
        shape = (1, height // d, width // d, dcfg.unet.out_channels)
        images = [[] for _ in range(count)]
        batches = _batches(jobs, batch_size)
        for j, (batch, padded) in enumerate(batches):
            seeds = [(seed + k) % 2 ** 32 for _, k, _ in padded]
            noise = np.concatenate([np.asarray(draw_noise(s, shape)) for s in seeds])
            stage = f"drawing batch {j + 1}/{len(batches)}: {len(batch)} image(s) at {width}x{height}, " \
                    f"{sampler.num_steps} steps"
            pixels = self._render(np.stack([f for *_, f in padded]), height, width, sampler, noise, seed, stage=stage)
            for (i, k, _), s, image in zip(batch, seeds, pixels):
                images[i].append(GeneratedImage(k, s, image))
        return [CaptionImages([answers[i, r] for r in range(per_caption)], images[i]) for i in range(count)]


def _batches(items: list, size: int) -> list[tuple[list, list]]:
    """(batch, the batch padded to `size` with copies of its last item) for `items` in batches of `size`:
    every batch has one shape, so one compiled program runs them all."""
    batches = [items[start:start + size] for start in range(0, len(items), size)]
    return [(batch, batch + [batch[-1]] * (size - len(batch))) for batch in batches]
