"""Non-finite values (NaN, Inf) are reported, never silently turned into a black image, a skipped
training step or a converted weight."""
from __future__ import annotations

import numpy as np


class NonFiniteError(FloatingPointError):
    """A computed or loaded value is NaN or infinite; the message says where and how many."""


COUNT_CHUNK = 1 << 24  # elements: a bf16 / fp16 array is counted through float32 a chunk at a time


def nonfinite_counts(x) -> tuple[int, int]:
    """(NaN count, +-Inf count) of a floating array (0, 0 for integer arrays); host memory beyond `x`
    stays under one float32 chunk whatever its size."""
    x = np.asarray(x)
    if x.dtype.kind in "biuSUO":
        return 0, 0
    flat = x.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.size, COUNT_CHUNK):
        chunk = flat[start:start + COUNT_CHUNK]
        if chunk.dtype.kind == "V" or chunk.dtype.itemsize < 4:  # bfloat16, float8 (ml_dtypes), float16
            chunk = chunk.astype(np.float32)
        nan += int(np.isnan(chunk).sum())
        inf += int(np.isinf(chunk).sum())
    return nan, inf


def check_finite(x, what: str) -> None:
    """Raise `NonFiniteError` naming `what` when `x` holds NaN or Inf values."""
    nan, inf = nonfinite_counts(x)
    if nan or inf:
        raise NonFiniteError(f"{what} holds {nan} NaN and {inf} infinite values (of {np.size(x)})")
