"""Named tensors read one at a time from PyTorch checkpoint files, without loading a whole file.

* `.safetensors`: the header is parsed here and each tensor read with one positioned read, so host
  memory holds one tensor at a time and no file mapping grows the resident set.
* `.bin` / `.pt` (torch zip format): `torch.load(mmap=True, weights_only=True)`; after a tensor is
  copied out, its pages are dropped from the mapping (`madvise(MADV_DONTNEED)`).
* folders: a Hugging Face / diffusers weights folder, sharded (`*.index.json`) or not.

Combinators give several files one key space: `Renamed` (add/strip a prefix), `Overlay` (later
sources override earlier keys, as the official non-strict loads do; or shards that must not
overlap), `MergedLora` (peft LoRA folded into its base weights on read). Every problem with a file
is a `SourceError` naming the file.

`verify_file` reads a file once for its SHA-256 and checks the CRC-32 of every member of a torch zip
file, which torch.load does not: bytes overwritten inside a tensor's data still load, as garbage.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import struct
import threading
import warnings
import zipfile
import zlib
from typing import Iterable, Mapping, Protocol

import ml_dtypes
import numpy as np


class SourceError(ValueError):
    pass


class TensorSource(Protocol):
    def keys(self) -> list[str]: ...  # in precedence order: a later key overrides an earlier one

    def shape(self, key: str) -> tuple[int, ...]: ...

    def dtype(self, key: str) -> np.dtype: ...

    def read(self, key: str) -> np.ndarray: ...

    def files(self) -> list[str]: ...


class ArraySource:
    """In-memory tensors: a mapping or `(key, array)` pairs."""

    def __init__(self, tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]):
        self.tensors = dict(tensors.items() if isinstance(tensors, Mapping) else tensors)

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(np.shape(self.tensors[key]))

    def dtype(self, key: str) -> np.dtype:
        return np.asarray(self.tensors[key]).dtype

    def read(self, key: str) -> np.ndarray:
        return np.asarray(self.tensors[key])

    def files(self) -> list[str]:
        return []


def as_source(tensors) -> TensorSource:
    return tensors if hasattr(tensors, "read") else ArraySource(tensors)


# --------------------------------------------------------------------------------------------------
# Files

_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                       "BOOL": np.bool_, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}


class SafetensorsFile:
    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SourceError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise SourceError(f"{path}: truncated or not a safetensors file (header of {n} bytes, "
                                  f"file of {size})")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise SourceError(f"{path}: unreadable safetensors header ({e})") from None
        header.pop("__metadata__", None)
        self.base = 8 + n
        self.entries = {}
        for key, e in header.items():
            if e["dtype"] not in _SAFETENSORS_DTYPES:
                raise SourceError(f"{path}: tensor {key} has unsupported dtype {e['dtype']}")
            begin, end = e["data_offsets"]
            if self.base + end > size:
                raise SourceError(f"{path}: truncated (tensor {key} ends at byte {self.base + end}, the file "
                                  f"has {size})")
            self.entries[key] = (np.dtype(_SAFETENSORS_DTYPES[e["dtype"]]), tuple(e["shape"]), begin, end)

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key][1]

    def dtype(self, key: str) -> np.dtype:
        return self.entries[key][0]

    def read(self, key: str) -> np.ndarray:
        dtype, shape, begin, end = self.entries[key]
        out = np.empty(end - begin, np.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.base + begin)
            if f.readinto(memoryview(out)) != end - begin:
                raise SourceError(f"{self.path}: short read of tensor {key}")
        return out.view(dtype).reshape(shape)

    def files(self) -> list[str]:
        return [self.path]


def _drop_pages(address: int, length: int) -> None:
    """Release the resident pages of a read-only file mapping (they re-read from disk if touched)."""
    page = os.sysconf("SC_PAGE_SIZE")
    start = address - address % page
    try:
        ctypes.CDLL(None).madvise(ctypes.c_void_p(start), ctypes.c_size_t(address + length - start), 4)
    except (OSError, AttributeError):  # not Linux: the pages stay mapped until the file is closed
        pass


class TorchFile:
    """A `torch.save` state dict (also one nested under `state_dict` / `module`)."""

    def __init__(self, path: str):
        import torch

        self.path = path
        # The zip format can be mapped; the legacy (pre-1.6) one is read whole.
        self.mapped = zipfile.is_zipfile(path)
        with open(path, "rb") as f:
            head = f.read(2)
        if not head:
            raise SourceError(f"{path}: an empty file (0 bytes), not a PyTorch checkpoint")
        if not self.mapped and not head.startswith((b"PK", b"\x80")):  # a torch zip (maybe damaged), a pickle
            raise SourceError(f"{path}: not a PyTorch checkpoint (neither a torch zip file nor a torch pickle)")
        try:
            with warnings.catch_warnings():  # on a foreign pickle: advice for torch's developers, on stderr
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                state = torch.load(path, map_location="cpu", mmap=self.mapped, weights_only=True)
        except Exception as e:  # pickle / zip / IO errors of damaged or foreign files
            text = str(e)
            if "WeightsUnpickler error:" in text:  # PyTorch's advice on weights_only=False: not for a converter
                detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
                raise SourceError(f"{path}: not a PyTorch state dict of tensors: the safe loader refused "
                                  f"it ({_first_sentence(detail)})") from None
            detail = _first_sentence(text.splitlines()[0]) if text.strip() else ""
            raise SourceError(f"{path}: cannot read the torch checkpoint, damaged or truncated? "
                              f"({type(e).__name__}{': ' + detail if detail else ''})") from None
        for wrapper in ("state_dict", "module"):
            if isinstance(state, dict) and set(state) == {wrapper}:
                state = state[wrapper]
        if not isinstance(state, dict):
            raise SourceError(f"{path}: holds a {type(state).__name__}, not a state dict")
        self.tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def dtype(self, key: str) -> np.dtype:
        import torch

        t = self.tensors[key]
        if t.dtype == torch.bfloat16:
            return np.dtype(ml_dtypes.bfloat16)
        return torch.empty(0, dtype=t.dtype).numpy().dtype

    def read(self, key: str) -> np.ndarray:
        import torch

        t = self.tensors[key].detach()
        try:
            if t.dtype == torch.bfloat16:
                out = t.contiguous().view(torch.int16).numpy().copy().view(ml_dtypes.bfloat16)
            else:
                out = t.contiguous().numpy().copy()
        except RuntimeError as e:  # a tensor whose bytes lie past the end of a truncated file
            raise SourceError(f"{self.path}: cannot read tensor {key} ({str(e).splitlines()[0][:120]})") from None
        if self.mapped:
            storage = t.untyped_storage()
            _drop_pages(storage.data_ptr(), storage.nbytes())
        return out

    def files(self) -> list[str]:
        return [self.path]


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s", text.strip(), maxsplit=1)[0]


WEIGHT_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin",
                "diffusion_pytorch_model.bin")
_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def open_file(path: str) -> TensorSource:
    if not os.path.isfile(path):
        raise SourceError(f"{path}: no such file")
    return SafetensorsFile(path) if path.endswith(".safetensors") else TorchFile(path)


def open_tensors(path: str) -> TensorSource:
    """A weights file, or a folder: `*.index.json` shards, else its one standard weights file."""
    if not os.path.isdir(path):
        return open_file(path)
    for name in WEIGHT_FILES:
        index = os.path.join(path, name + ".index.json")
        if os.path.isfile(index):
            with open(index) as f:
                weight_map = json.load(f).get("weight_map")
            if not isinstance(weight_map, dict):
                raise SourceError(f"{index}: no weight_map")
            shards = sorted(set(weight_map.values()))
            absent = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
            if absent:
                raise SourceError(f"{index}: shard files missing: {absent}")
            source = Overlay(*(open_file(os.path.join(path, s)) for s in shards), unique=index)
            unlisted = sorted(set(weight_map) - set(source.keys()))
            if unlisted:
                raise SourceError(f"{index}: {len(unlisted)} indexed tensors are in no shard, e.g. {unlisted[:3]}")
            return source
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return open_file(os.path.join(path, name))
    found = sorted(f for f in os.listdir(path) if f.endswith(_SUFFIXES))
    if len(found) == 1:
        return open_file(os.path.join(path, found[0]))
    raise SourceError(f"{path}: no weights file ({' / '.join(WEIGHT_FILES)} or an index)"
                      + (f"; several candidates: {found}" if found else ""))


def _damaged(path: str, member: str, what: str) -> SourceError:
    return SourceError(f"{path}: zip member {member} {what}: the file is damaged, download it again")


def _zip_members(path: str) -> tuple[list[tuple[int, int, int, str]], list[zipfile.ZipInfo]]:
    """The members of the zip file `path` (torch's checkpoint format): (data offset, size, CRC-32, name)
    of each stored one by offset, and the compressed ones; ([], []) for any other file (safetensors and
    legacy torch pickles carry no checksums).

    Raises SourceError when the zip directory or a member's local header is damaged."""
    if not zipfile.is_zipfile(path):
        return [], []
    stored, compressed = [], []
    try:
        with zipfile.ZipFile(path) as z, open(path, "rb") as f:
            for info in z.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    compressed.append(info)
                    continue
                # The data follows the LOCAL header, whose extra field (torch's alignment padding) can
                # differ in length from the central directory's copy.
                f.seek(info.header_offset)
                header = f.read(30)
                if len(header) < 30 or header[:4] != b"PK\x03\x04":
                    raise _damaged(path, info.filename, "has no local header")
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                stored.append((info.header_offset + 30 + name_len + extra_len, info.compress_size, info.CRC,
                               info.filename))
    except zipfile.BadZipFile as e:
        raise SourceError(f"{path}: unreadable zip directory ({e}): the file is damaged, download it again") from None
    return sorted(stored), compressed


def verify_file(path: str, *, digest: bool = True, stop: threading.Event | None = None,
                chunk: int = 1 << 23) -> str | None:
    """Read `path` once, front to back: its SHA-256 ("sha256:<hex>"; None without `digest`) and, for a
    torch zip file, every member's CRC-32 checked against the zip directory as its bytes go by. Without
    `digest` only zip files are read. Returns None early when `stop` is set.

    Raises SourceError naming the file and the first damaged member (a few overwritten bytes in a
    tensor still load, as garbage weights: only the CRC sees them)."""
    members, compressed = _zip_members(path)
    if not digest and not members and not compressed:
        return None
    h = hashlib.sha256() if digest else None
    crc, pos, i = 0, 0, 0  # the CRC of members[i] so far; file offset of the next block
    with open(path, "rb") as f:
        while block := f.read(chunk):
            if stop is not None and stop.is_set():
                return None
            if h is not None:
                h.update(block)
            end, view = pos + len(block), memoryview(block)
            while i < len(members) and members[i][0] <= end:  # members[i] starts in or before this block
                start, size, want, name = members[i]
                crc = zlib.crc32(view[max(start - pos, 0):min(start + size, end) - pos], crc)
                if start + size > end:
                    break
                if crc != want:
                    raise _damaged(path, name, f"fails its CRC-32 check ({crc:08x}, the directory says {want:08x})")
                crc, i = 0, i + 1
            pos = end
            if h is None and i == len(members):
                break
    if i < len(members):
        raise _damaged(path, members[i][3], "ends past the end of the file")
    if compressed:
        with zipfile.ZipFile(path) as z:
            for info in compressed:
                try:
                    with z.open(info) as m:  # zipfile checks the CRC-32 of what it inflates
                        while m.read(chunk):
                            pass
                except (zipfile.BadZipFile, zlib.error) as e:
                    raise _damaged(path, info.filename, f"cannot be read ({e})") from None
    return "sha256:" + h.hexdigest() if h is not None else None


# --------------------------------------------------------------------------------------------------
# Combinators


class Renamed:
    """Keys starting with `strip` (all keys when empty), with it removed and `add` put in front."""

    def __init__(self, source: TensorSource, *, add: str = "", strip: str = ""):
        self.source = source
        self.names = {add + k[len(strip):]: k for k in source.keys() if k.startswith(strip)}

    def keys(self) -> list[str]:
        return list(self.names)

    def shape(self, key):
        return self.source.shape(self.names[key])

    def dtype(self, key):
        return self.source.dtype(self.names[key])

    def read(self, key):
        return self.source.read(self.names[key])

    def files(self) -> list[str]:
        return self.source.files()


class Overlay:
    """Sources as one key space in precedence order: a key of a later source hides the same key before
    it - or, with `unique` (a name for the message), is an error (the shards of one checkpoint)."""

    def __init__(self, *sources: TensorSource, unique: str | None = None):
        self.sources = sources
        self.where: dict[str, TensorSource] = {}
        for source in sources:
            for key in source.keys():
                previous = self.where.pop(key, None)  # re-inserted last: keys() stays in precedence order
                if unique and previous is not None:
                    raise SourceError(f"{unique}: tensor {key} is in both {previous.files()[0]} and "
                                      f"{source.files()[0]}")
                self.where[key] = source

    def keys(self) -> list[str]:
        return list(self.where)

    def shape(self, key):
        return self.where[key].shape(key)

    def dtype(self, key):
        return self.where[key].dtype(key)

    def read(self, key):
        return self.where[key].read(key)

    def files(self) -> list[str]:
        return [f for s in self.sources for f in s.files()]


_LORA = re.compile(r"(.*)\.lora_([AB])(?:\.default)?\.weight")


class MergedLora:
    """peft LoRA folded into the base weights on read: `W + scaling * B @ A` (docs/llm.md#lora), computed
    in float32 and cast back to W's dtype. The consumed `lora_A/B` keys are listed in `merged`."""

    def __init__(self, source: TensorSource, scaling: float):
        self.source, self.scaling = source, scaling
        pairs: dict[str, dict[str, str]] = {}
        for key in source.keys():
            if m := _LORA.fullmatch(key):
                pairs.setdefault(m.group(1), {})[m.group(2)] = key
        self.lora: dict[str, tuple[str, str]] = {}
        for key in source.keys():
            module = key[:-len(".weight")].removesuffix(".base_layer") if key.endswith(".weight") else None
            if module in pairs and set(pairs[module]) == {"A", "B"} and not _LORA.fullmatch(key):
                self.lora[key] = (pairs[module]["A"], pairs[module]["B"])
        self.merged = sorted(k for a, b in self.lora.values() for k in (a, b))
        self.names = [k for k in source.keys() if k not in set(self.merged)]

    def keys(self) -> list[str]:
        return list(self.names)

    def shape(self, key):
        return self.source.shape(key)

    def dtype(self, key):
        return self.source.dtype(key)

    def read(self, key):
        base = self.source.read(key)
        if key not in self.lora:
            return base
        a, b = (self.source.read(k).astype(np.float32) for k in self.lora[key])
        return (base.astype(np.float32) + self.scaling * (b @ a)).astype(base.dtype)

    def files(self) -> list[str]:
        return self.source.files()


def locate(source: TensorSource, key: str) -> tuple[str | None, str]:
    """(the file `key` of `source` is read from, or None for in-memory tensors; its key in that file),
    through the combinators above. A merged LoRA weight is named by its base weight."""
    while True:
        if isinstance(source, Renamed):
            source, key = source.source, source.names[key]
        elif isinstance(source, Overlay):
            source = source.where[key]
        elif isinstance(source, MergedLora):
            source = source.source
        else:
            files = source.files()
            return (files[0] if len(files) == 1 else None), key
