"""Training sequences as SEED-X builds them (docs/training_recipe.md): token ids, labels, attention mask, and
which positions and images are comprehension or generation slots.

Every segment is tokenized separately (`add_special_tokens=False`), then
`input_ids = [BOS] + segments + [EOS]`, `labels = [-100] + segment labels + [EOS]`, right-padded to
`max_length` (pad id / -100 / mask 0). A sample that cannot be built raises `SequenceError` with the
reason, for the pipeline to count and skip.

Not copied here: the 28 generation prompts with their responses (src/data/image_text_pairs_clm.py)
and the 21 polite edit responses (src/data/sft_clm.py). `PromptLists` holds them; the defaults are a few examples.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.losses import IGNORE_INDEX
from seedx_jax.tokens import IMG_END, IMG_START, PATCH_END, PATCH_START, anyres_image_text, image_placeholders


class SequenceError(ValueError):
    """A sample that is dropped (too long, malformed); the message says why."""


@dataclasses.dataclass(frozen=True)
class PromptLists:
    generation: tuple[tuple[str, str], ...] = (("Please show me a picture of", "Here is a picture."),
                                               ("Generate an image:", "Here is a picture."))
    edit_responses: tuple[str, ...] = ("Here is the edited image.", "")


@dataclasses.dataclass
class Sequence:
    """One padded training row `[L]` plus per-image masks `[n_images]`."""

    input_ids: np.ndarray
    labels: np.ndarray
    attention_mask: np.ndarray
    ids_cmp_mask: np.ndarray
    ids_gen_mask: np.ndarray
    embeds_cmp_mask: np.ndarray
    embeds_gen_mask: np.ndarray


def _assemble(tok: SeedXTokenizer, segments: list[tuple[list[int], bool]], max_length: int, *,
              truncate: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[BOS] + segments + [EOS] (labels: -100, each segment's ids where trained, EOS), padded."""
    ids = [tok.bos_id] + [i for seg, _ in segments for i in seg] + [tok.eos_id]
    labels = [IGNORE_INDEX] + [i if trained else IGNORE_INDEX for seg, trained in segments for i in seg]
    labels.append(tok.eos_id)
    if len(ids) > max_length:
        if not truncate:
            raise SequenceError(f"{len(ids)} tokens > max_length {max_length}")
        ids, labels = ids[:max_length], labels[:max_length]
    n = len(ids)
    pad = max_length - n
    return (np.asarray(ids + [tok.pad_id] * pad, np.int32), np.asarray(labels + [IGNORE_INDEX] * pad, np.int32),
            np.arange(max_length) < n)


def _spans(ids: np.ndarray, start: int, end: int) -> list[tuple[int, int]]:
    """(open, close) positions of each `start ... end` pair in order."""
    opens, closes = np.flatnonzero(ids == start), np.flatnonzero(ids == end)
    return list(zip(opens.tolist(), closes.tolist()))


def _image_spans(tok: SeedXTokenizer, ids: np.ndarray) -> tuple[list, list]:
    """(`<img>`...`</img>` spans, `<patch>`...`</patch>` spans) in order."""
    return (_spans(ids, tok.token_id(IMG_START), tok.token_id(IMG_END)),
            _spans(ids, tok.token_id(PATCH_START), tok.token_id(PATCH_END)))


def _between(length: int, spans: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(length, bool)
    for a, b in spans:
        mask[a + 1:b] = True
    return mask


def vqa_sequence(tok: SeedXTokenizer, turns: list[str], *, num_tiles: int | None, max_length: int,
                 image_first: bool) -> Sequence:
    """(A) multi-turn VQA: `turns` = [user, assistant, user, assistant, ...]; the image (any-res with
    `num_tiles` tiles, None: text only) goes before or after the first user text. Answers and the
    final EOS are trained. Truncated to `max_length` unless that cuts into the first image."""
    if len(turns) < 2 or len(turns) % 2:
        raise SequenceError(f"a conversation needs user/assistant pairs, got {len(turns)} turns")
    segments = []
    for i, text in enumerate(turns):
        if i % 2:
            segments.append((tok.encode(text), True))
            continue
        if i == 0 and num_tiles is not None:
            image = anyres_image_text(num_tiles)
            text = image + text if image_first else text + image
        prompt = f"[INST] {text} [/INST]\n" if i == 0 else f"\n[INST] {text} [/INST]\n"
        segments.append((tok.encode(prompt), False))
    ids_all = np.asarray([tok.bos_id] + [i for s, _ in segments for i in s], np.int64)
    if num_tiles is not None:
        first_close = int(np.flatnonzero(ids_all == tok.token_id(IMG_END))[0])
        if first_close >= max_length:
            raise SequenceError(f"the image ends at token {first_close} >= max_length {max_length}")
    ids, labels, mask = _assemble(tok, segments, max_length, truncate=True)
    cmp = np.zeros(max_length, bool)
    if num_tiles is not None:
        images, patches = _image_spans(tok, ids)
        cmp = _between(max_length, images[:1] + patches)
    n_images = 0 if num_tiles is None else num_tiles + 1
    return Sequence(ids, labels, mask, cmp, np.zeros(max_length, bool), np.ones(n_images, bool),
                    np.zeros(n_images, bool))


def t2i_sequence(tok: SeedXTokenizer, caption: str, *, prompt_index: int, max_length: int,
                 prompts: PromptLists = PromptLists()) -> Sequence:
    """(B) text-to-image on a 1x1 grid (images [tile, global]). The generation prompt + caption + its
    response are not trained; `<img>` and EOS are, the 64 image tokens and `</img>` are not; the
    global image is the generation target. When that does not fit, an image-first captioning sample
    (caption + EOS trained, both images comprehension)."""
    prompt, response = prompts.generation[prompt_index]
    text = ("[INST] " + prompt + " " + caption.lstrip() + " [/INST]\n").rstrip(" ")
    text += " " + response if response else ""  # no response: `<img>` follows the prompt, as at inference
    text_ids = tok.encode(text)
    num_tiles = 1
    if len(text_ids) + 66 * (num_tiles + 1) + 2 <= max_length:
        image_ids = tok.encode(IMG_START + image_placeholders() + IMG_END)
        ids, lab, mask = _assemble(tok, [(text_ids, False), (image_ids, True)], max_length, truncate=False)
        start = 2 + len(text_ids)  # after BOS, the text and <img>
        lab[start:start + len(image_ids) - 1] = IGNORE_INDEX  # the 64 image tokens and </img>
        gen = np.zeros(max_length, bool)
        gen[start:start + len(image_ids) - 2] = True
        return Sequence(ids, lab, mask, np.zeros(max_length, bool), gen, np.zeros(2, bool), np.array([False, True]))
    image_ids = tok.encode(anyres_image_text(num_tiles))
    if len(image_ids) + 2 > max_length:
        raise SequenceError(f"the image alone needs {len(image_ids) + 2} tokens > max_length {max_length}")
    ids, lab, mask = _assemble(tok, [(image_ids, False), (tok.encode(caption), True)], max_length, truncate=True)
    images, patches = _image_spans(tok, ids)
    return Sequence(ids, lab, mask, _between(max_length, images + patches), np.zeros(max_length, bool), np.ones(2, bool),
                    np.zeros(2, bool))


def edit_sequence(tok: SeedXTokenizer, instruction: str, *, response: str, max_length: int,
                  image_first: bool) -> Sequence:
    """(C) single-turn editing, images [src_tile, src_global, tgt_tile, tgt_global]: the response,
    `<img>` and EOS are trained; the 64 target image tokens and `</img>` are not. Never truncated."""
    source = anyres_image_text(1)
    user = f"[INST] {source + instruction if image_first else instruction + source} [/INST]\n"
    answer = tok.encode(response + IMG_START + image_placeholders() + IMG_END)
    segments = [(tok.encode(user), False), (answer, True)]
    length = 2 + sum(len(seg) for seg, _ in segments)
    if length >= max_length:  # as SEED-X: dropped, not truncated
        raise SequenceError(f"{length} tokens >= max_length {max_length}")
    ids, labels, mask = _assemble(tok, segments, max_length, truncate=False)
    images, patches = _image_spans(tok, ids)
    *comprehension, generation = sorted(images + patches)
    labels[generation[0] + 1:generation[1] + 1] = IGNORE_INDEX
    return Sequence(ids, labels, mask, _between(max_length, comprehension), _between(max_length, [generation]),
                    np.array([True, True, False, False]), np.array([False, False, False, True]))
