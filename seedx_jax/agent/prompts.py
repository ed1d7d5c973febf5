"""Prompt templates of the released models (docs/tokenizer.md). Prompts are strings; the tokenizer turns
them into ids after a BOS, exactly as the official inference scripts do.

`{images}` is the any-res text (`tokens.anyres_image_text`) of every input image, concatenated; the official scripts
prepend it to the question. Multi-turn inference is not scripted officially: follow-up turns use the
training layout `\\n[INST] {images}{question} [/INST]\\n` (src/data/sft_clm.py); for the base model we chose
`\\nQuestion: {images}{question}\\nAnswer:`.
"""
from __future__ import annotations

import dataclasses
import re

from seedx_jax import tokens as T


class PromptError(ValueError):
    pass


_STRUCTURE = {T.IMG_START, T.IMG_END, T.PATCH_START, T.PATCH_END}
_CONTROL = {"<s>": "beginning-of-sequence", "</s>": "end-of-sequence", "<unk>": "unknown-piece"}
TAG_RE = re.compile(r"<(?:img_\d+|loc-\d+|/?img|/?patch|box_start|box_end)>")


def check_user_text(tokenizer, text: str, name: str = "prompt") -> str:
    """The one rule for text a user writes, at inference and in training data: box and location
    tokens may be typed, image-structure and LLM control tokens may not (images go in as images,
    and the sequence's structure is ours to build).

    Raises:
      PromptError: `text` is empty, or types an image-structure token (`<img>`, `<patch>`,
        `<img_00012>`), a control token (`<s>`, `</s>`, `<unk>`) or an unknown SEED-X tag (`<loc-300>`).
    """
    if not isinstance(text, str) or not text.strip():
        raise PromptError(f"{name} is empty")
    for part in tokenizer.split(text):
        if part in _STRUCTURE or part.startswith("<img_"):
            raise PromptError(f"{name} contains {part!r}: images are passed as images, not typed as tokens")
        if part in _CONTROL:
            raise PromptError(f"{name} contains {part!r}, the LLM's {_CONTROL[part]} token, which a prompt cannot "
                              "hold")
    for tag in TAG_RE.findall(text):
        if tag not in tokenizer.added_tokens:
            raise PromptError(f"{name} contains {tag!r}, which is not a SEED-X token")
    return text


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    name: str
    comprehension: str  # {images}, {question}
    grounding: str  # {images}, {caption}
    text_to_image: str  # {caption}
    follow_up: str  # {images}, {question}
    edit: str | None = None  # {images}, {instruction}; SEED-X-Edit (1x1 grid)
    grounding_opens_box: bool = False  # the grounding prompt ends in <box_start>

    def chat(self, question: str, image_texts: list[str]) -> str:
        return self.comprehension.format(images="".join(image_texts), question=_non_empty(question, "question"))

    def ground(self, caption: str, image_texts: list[str]) -> str:
        if not image_texts:
            raise PromptError("grounding needs an image: boxes are measured on the input image")
        return self.grounding.format(images="".join(image_texts), caption=_non_empty(caption, "caption"))

    def generate(self, caption: str) -> str:
        return self.text_to_image.format(caption=_non_empty(caption, "caption"))

    def edit_prompt(self, instruction: str, image_text: str) -> str:
        if self.edit is None:
            raise PromptError(f"template {self.name!r} has no editing prompt; use seed_x_edit")
        return self.edit.format(images=image_text, instruction=_non_empty(instruction, "instruction"))

    def next_turn(self, question: str, image_texts: list[str] = ()) -> str:
        return self.follow_up.format(images="".join(image_texts), question=_non_empty(question, "question"))


def _non_empty(text: str, name: str) -> str:
    if not text or not text.strip():
        raise PromptError(f"{name} is empty")
    return text


_INST = "[INST] {images}{question} [/INST]\n"
TEMPLATES = {
    "seed_x": PromptTemplate(
        "seed_x", comprehension="Question: {images}{question}\nAnswer:",
        grounding="{images}{caption} [[ " + T.BOX_START, text_to_image="{caption}" + T.IMG_START,
        follow_up="\nQuestion: {images}{question}\nAnswer:", grounding_opens_box=True),
    "seed_x_i": PromptTemplate(
        "seed_x_i", comprehension=_INST, grounding=_INST.replace("{question}", "{caption}"),
        text_to_image="[INST] Generate an image: {caption} [/INST]\n", follow_up="\n" + _INST),
    "seed_x_edit": PromptTemplate(
        "seed_x_edit", comprehension=_INST, grounding=_INST.replace("{question}", "{caption}"),
        text_to_image="[INST] Generate an image: {caption} [/INST]\n", follow_up="\n" + _INST,
        edit=_INST.replace("{question}", "{instruction}")),
}


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise PromptError(f"unknown prompt template {name!r}; choose from {sorted(TEMPLATES)}")
    return TEMPLATES[name]
