"""The machine and its own limits, measured in the benchmark's run: matmul FLOP/s (fp32, bf16) and memory bandwidth.

FLOP/s: a large square matmul, best of a few calls, jax and torch; the ceiling is the better of the two
(what this machine's BLAS / XLA can do). Bandwidth: the read rate of a sum over an array far larger than
the caches, best of numpy, jax and torch.
"""
from __future__ import annotations

import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_info() -> dict:
    """CPU model and the flags that matter for fp32 / bf16 / int8 kernels, versions, date and load."""
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import flax
    return dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), cpu=model,
                cores=os.cpu_count(), cpu_flags=[f for f in CPU_FLAGS if f in flags],
                load_avg_1min=os.getloadavg()[0], python=platform.python_version(), jax=jax.__version__,
                jaxlib=jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
                xla_backend=jax.devices()[0].platform, xla_platform_version=jax.devices()[0].client.platform_version,
                flax=flax.__version__, torch=torch.__version__, torch_threads=torch.get_num_threads(),
                xla_flags=os.environ.get("XLA_FLAGS", ""))


def matmul_flops(n: int, dtype: str, repeats: int = 4) -> dict:
    """{'jax': FLOP/s, 'torch': FLOP/s} of an [n, n] @ [n, n] matmul in `dtype` (float32 | bfloat16)."""
    a = np.random.default_rng(0).standard_normal((n, n), np.float32)
    ja = jnp.asarray(a, dtype)
    mm = jax.jit(lambda x, y: x @ y)
    ta = torch.from_numpy(a).to(getattr(torch, dtype))
    flops = 2.0 * n ** 3
    return dict(jax=flops / _best(lambda: mm(ja, ja).block_until_ready(), repeats),
                torch=flops / _best(lambda: torch.mm(ta, ta), repeats))


def read_bandwidth(megabytes: int = 512, repeats: int = 4) -> dict:
    """{'numpy' | 'jax' | 'torch': bytes/s} reading a float32 array of `megabytes` once (a sum)."""
    x = np.ones(megabytes * 2 ** 20 // 4, np.float32)
    jx, tx = jnp.asarray(x), torch.from_numpy(x)
    total = jax.jit(jnp.sum)
    return {name: x.nbytes / _best(fn, repeats) for name, fn in (
        ("numpy", lambda: x.sum()), ("jax", lambda: total(jx).block_until_ready()), ("torch", lambda: tx.sum()))}


def measure(matmul_n: int = 2048, megabytes: int = 512) -> dict:
    """The ceilings: peak fp32 / bf16 matmul FLOP/s and read bandwidth (the best side of each), with all sides."""
    fp32, bf16 = matmul_flops(matmul_n, "float32"), matmul_flops(matmul_n, "bfloat16")
    bw = read_bandwidth(megabytes)
    return dict(matmul_n=matmul_n, fp32_flops=fp32, bf16_flops=bf16, read_bytes_per_s=bw,
                peak_fp32=max(fp32.values()), peak_bf16=max(bf16.values()), bandwidth=max(bw.values()))
