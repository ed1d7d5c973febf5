"""Suite part `ceilings`: the device, which torch runs beside it, and the two measured ceilings.

* bf16 matmul FLOP/s: an n x n x n product (n = 8192 on a GPU) of random values (zeros run faster on
  some GPUs), 2 n^3 FLOPs per product, ten products back to back after a warm-up.
* memory bandwidth: `x + 1` over a large bf16 array, counting the bytes read plus the bytes written.

The datasheet peaks (accel_common) are the suite's reference ceilings; these measured ones say how far
the card as found is from them.
"""
from __future__ import annotations

import time

from accel_common import Budget, Recorder, torch_device

SIZES = {"gpu": dict(matmul_n=8192, copy_bytes=4 << 30, repeats=10),
         "smoke": dict(matmul_n=256, copy_bytes=16 << 20, repeats=3)}


def _rate(fn, x, work: float, repeats: int) -> float:
    """work units per second of `fn(*x)`, compiled and warmed up first."""
    fn(*x).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*x)
    out.block_until_ready()
    return work * repeats / (time.perf_counter() - start)


def run(args, rec: Recorder, budget: Budget) -> None:
    import jax
    import jax.numpy as jnp

    sizes = SIZES["smoke" if args.smoke else "gpu"]
    info = rec.data["details"]["device"]
    device, line = torch_device(info["platform"])
    rec.detail("torch", {"device": device, "line": line})
    rec.note(f"JAX {info['jax']} on {info['kind']} ({info['platform']}); {line}")

    n = sizes["matmul_n"]
    ka, kb = jax.random.split(jax.random.key(0))
    a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in (ka, kb))
    flops = _rate(jax.jit(jnp.matmul), (a, b), 2.0 * n ** 3, sizes["repeats"])
    rec.detail("measured_bf16_flops", flops)
    rec.row(f"bf16 matmul {n}^3 (measured ceiling)", "TFLOP/s", flops / 1e12, achieved=flops, ceiling="bf16_flops")
    del a, b

    elems = sizes["copy_bytes"] // 2
    x = jax.random.normal(jax.random.key(1), (elems,), jnp.bfloat16)
    bandwidth = _rate(jax.jit(lambda v: v + 1), (x,), 2.0 * sizes["copy_bytes"], sizes["repeats"])
    rec.detail("measured_bandwidth", bandwidth)
    rec.row(f"read + write {sizes['copy_bytes'] >> 20} MiB (measured ceiling)", "TB/s", bandwidth / 1e12,
            achieved=bandwidth, ceiling="bandwidth")
