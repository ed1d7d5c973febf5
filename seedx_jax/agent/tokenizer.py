"""The SEED-X token layout on a Llama SentencePiece model, tokenising as transformers 4.30.2's slow
`LlamaTokenizer` did for the released checkpoints (docs/tokenizer.md).

Rules reproduced: the text is split on added tokens (and on the SentencePiece control strings
`<s>`, `</s>`, `<unk>`, which 4.30.2 also never splits); whitespace next to every added token is
stripped from the neighbouring fragments (`str.strip`, so newlines go too), but not next to `<s>`,
`</s>`, `<unk>` (4.30.2 registers those as `AddedToken(lstrip=False, rstrip=False)`); each remaining
non-empty fragment is encoded separately by SentencePiece (each gets its own dummy-prefix `▁`).
Decoding joins added tokens with spaces and writes `<s>`, `</s>`, `<unk>` literally; only these three
are "special" (`skip_special_tokens`), the added tokens are not. tests/test_tokenizer_parity.py checks
all of this against a recording of 4.30.2. Newer transformers releases tokenise some of these prompts
differently, hence our own implementation.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Iterable, Mapping

import numpy as np
import sentencepiece as spm

from seedx_jax import tokens as T

SP_MODEL_FILE = "tokenizer.model"
ADDED_TOKENS_FILE = "added_tokens.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
NUM_IMAGE_TOKEN_STRINGS = 100  # <img_00000>..<img_00099>; only the first 64 are used


def train_sentencepiece(path: str, sentences: Iterable[str], vocab_size: int) -> str:
    """Write a BPE SentencePiece model in Llama-2's layout (unk 0, bos 1, eos 2, no pad, byte fallback
    so "\\n" is <0x0A> = 13, identity normalisation, dummy prefix, split digits) to `path`.

    For tiny models and the shapes-world demo, where no released tokenizer can be downloaded.
    """
    import io

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, hard_vocab_limit=False,
        minloglevel=2)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return path


def released_added_tokens() -> list[str]:
    """The 330 added tokens in the released id order (docs/tokenizer.md): id = base vocabulary size + index."""
    return ([T.image_token(i) for i in range(NUM_IMAGE_TOKEN_STRINGS)]
            + [T.IMG_START, T.IMG_END, T.PATCH_START, T.PATCH_END]
            + [T.loc_token(k) for k in range(T.NUM_LOC_BINS)] + [T.BOX_START, T.BOX_END])


class TokenizerError(ValueError):
    pass


def _path(path, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TokenizerError(f"tokenizer: {name} must be a path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def _flag(value, name: str) -> None:
    if not isinstance(value, bool):  # "no" or 0.5 would silently count as True
        raise TokenizerError(f"{name}={value!r} must be True or False")


class SeedXTokenizer:
    """`encode(text) -> ids`, `decode(ids) -> text` for SEED-X prompts.

    `added_tokens` maps each added string to its id (the released `added_tokens.json`); by default the
    330 SEED-X tokens get ids `sp_vocab_size .. sp_vocab_size + 329` in the released order.
    """

    def __init__(self, sp_model_file: str | os.PathLike, added_tokens: dict[str, int] | None = None,
                 pad_token: str | None = None):
        """Raises TokenizerError (a ValueError): no SentencePiece model at `sp_model_file`, `added_tokens`
        not a mapping of strings to int ids after the base vocabulary holding all 330 SEED-X tokens, or a
        `pad_token` that is not an added or control token."""
        sp_model_file = _path(sp_model_file, "sp_model_file")
        if not os.path.isfile(sp_model_file):
            raise TokenizerError(f"tokenizer: no SentencePiece model at {sp_model_file}")
        self.sp_model_file = sp_model_file
        self.sp = spm.SentencePieceProcessor(model_file=sp_model_file)
        base = self.sp.get_piece_size()
        if added_tokens is None:
            added_tokens = {tok: base + i for i, tok in enumerate(released_added_tokens())}
        if not isinstance(added_tokens, Mapping) or not all(
                isinstance(t, str) and isinstance(i, int) and not isinstance(i, bool) for t, i in added_tokens.items()):
            raise TokenizerError(f"tokenizer: added_tokens must map token strings to int ids, got "
                                 f"{type(added_tokens).__name__}")
        missing = [t for t in released_added_tokens() if t not in added_tokens]
        if missing:
            raise TokenizerError(f"tokenizer: added tokens lack {len(missing)} SEED-X tokens, e.g. {missing[:3]}")
        ids = sorted(added_tokens.values())
        if ids != list(range(base, base + len(ids))):
            raise TokenizerError(f"tokenizer: added token ids must be {base}..{base + len(ids) - 1} after the "
                                 f"{base} SentencePiece pieces, got {ids[0]}..{ids[-1]}")
        self.added_tokens = dict(added_tokens)
        self._added_by_id = {i: t for t, i in self.added_tokens.items()}
        self.bos_id, self.eos_id, self.unk_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
        self._control = {self.sp.id_to_piece(i): i for i in (self.bos_id, self.eos_id, self.unk_id) if i >= 0}
        self._control_by_id = {i: t for t, i in self._control.items()}
        # pad: the released files may name one [UNKNOWN]; unk otherwise (padding never reaches a loss).
        self.pad_token = pad_token
        self.pad_id = self.token_id(pad_token) if pad_token else self.unk_id
        splitters = sorted({**self.added_tokens, **self._control}, key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(re.escape(s) for s in splitters) + ")")

    # -- files ---------------------------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> "SeedXTokenizer":
        """A released tokenizer folder: tokenizer.model [+ added_tokens.json, special_tokens_map.json].

        Raises TokenizerError (a ValueError): `path` is not a directory (or not a path at all), or its
        files do not make a SEED-X tokenizer (see the constructor)."""
        path = _path(path, "path")
        if not os.path.isdir(path):
            raise TokenizerError(f"tokenizer: {path} is not a directory")
        added = None
        if os.path.isfile(os.path.join(path, ADDED_TOKENS_FILE)):
            with open(os.path.join(path, ADDED_TOKENS_FILE)) as f:
                added = {k: int(v) for k, v in json.load(f).items()}
        pad = None
        if os.path.isfile(os.path.join(path, SPECIAL_TOKENS_FILE)):
            with open(os.path.join(path, SPECIAL_TOKENS_FILE)) as f:
                pad = json.load(f).get("pad_token")
            pad = pad.get("content") if isinstance(pad, dict) else pad
        return cls(os.path.join(path, SP_MODEL_FILE), added, pad_token=pad)

    def save(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        shutil.copyfile(self.sp_model_file, os.path.join(path, SP_MODEL_FILE))
        with open(os.path.join(path, ADDED_TOKENS_FILE), "w") as f:
            json.dump(self.added_tokens, f, indent=0)
        if self.pad_token:
            with open(os.path.join(path, SPECIAL_TOKENS_FILE), "w") as f:
                json.dump({"pad_token": self.pad_token}, f)

    # -- vocabulary ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size() + len(self.added_tokens)

    def token_id(self, token: str) -> int:
        if token in self.added_tokens:
            return self.added_tokens[token]
        if token in self._control:
            return self._control[token]
        raise TokenizerError(f"tokenizer: {token!r} is not an added or control token")

    # -- encode / decode -----------------------------------------------------------------------

    def split(self, text: str) -> list[str]:
        """Fragments and split tokens in order, whitespace next to added tokens stripped (4.30.2); next to
        `<s>`, `</s>`, `<unk>` it stays."""
        parts = self._split_re.split(text)
        for i in range(1, len(parts), 2):  # odd entries are the split tokens
            if parts[i] in self.added_tokens:
                parts[i - 1] = parts[i - 1].rstrip()
                parts[i + 1] = parts[i + 1].lstrip()
        return [p for p in parts if p]

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """ids of `text` (`add_special_tokens=False` semantics; `add_bos` prepends BOS as the scripts do).

        Raises TokenizerError (a ValueError): `text` is not a str (bytes included: decode them first, the
        encoding is the caller's to know), or `add_bos` is not a bool."""
        if not isinstance(text, str):
            raise TokenizerError(f"text must be a str, got {type(text).__name__}")
        _flag(add_bos, "add_bos")
        ids = [self.bos_id] if add_bos else []
        for part in self.split(text):
            if part in self.added_tokens or part in self._control:
                ids.append(self.token_id(part))
            else:
                ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        """As 4.30.2: SentencePiece runs decoded, added tokens joined to them with single spaces.
        `skip_special_tokens` drops only `<s>`, `</s>`, `<unk>`: 4.30.2 loads added_tokens.json entries as
        ordinary (not special) added tokens, so `<img>`, `<loc-k>`, ... stay.

        ids: a sequence of ints or a 1-D integer numpy / jax array. Raises TokenizerError (a ValueError):
        anything else (floats, a str, a 2-D array), or an id outside [0, vocab_size)."""
        _flag(skip_special_tokens, "skip_special_tokens")
        chunks, run = [], []
        for i in self._checked_ids(ids):
            if skip_special_tokens and i in self._control_by_id:
                continue
            if i in self._added_by_id:
                if run:
                    chunks.append(self._decode_run(run))
                    run = []
                chunks.append(self._added_by_id[i])
            else:
                run.append(i)
        if run:
            chunks.append(self._decode_run(run))
        return " ".join(chunks)

    def _checked_ids(self, ids) -> list[int]:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TokenizerError(f"ids must be a sequence of token ids, got {type(ids).__name__}")
        try:
            array = np.asarray(ids if hasattr(ids, "shape") else list(ids))
        except ValueError:  # ragged nesting
            raise TokenizerError("ids must be a flat sequence of token ids") from None
        if array.size == 0:
            return []
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise TokenizerError(f"ids must be a flat sequence of integer token ids, got {array.dtype} values "
                                 f"of shape {array.shape}")
        bad = array[(array < 0) | (array >= self.vocab_size)]
        if bad.size:
            raise TokenizerError(f"ids holds id {bad[0]} outside the vocabulary of {self.vocab_size} tokens")
        return array.tolist()

    def _decode_run(self, run: list[int]) -> str:
        """4.30.2's `LlamaTokenizer.convert_tokens_to_string`: `<s>`, `</s>`, `<unk>` are written as
        themselves after the pieces before them are decoded. A control token after a normal piece puts
        one space in front of that decoded text, not next to the token: "a</s>b" comes back " a</s>b"."""
        out, pending, prev_control = "", [], False
        for k, i in enumerate(run):
            if i in self._control_by_id:
                if not prev_control and k:
                    out += " "
                out += self.sp.decode(pending) + self._control_by_id[i]
                pending, prev_control = [], True
            else:
                pending.append(i)
                prev_control = False
        return out + self.sp.decode(pending)
