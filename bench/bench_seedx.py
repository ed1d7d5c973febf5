"""SEED-X hot paths, seedx_jax against a PyTorch statement of the official computation, same weights, one run.

    .venv/bin/python bench/bench_seedx.py [--size small|tiny] [--only ROW ...] [--pairs 5] [--json out.json]

Every row times both sides interleaved in this process (medians, minimums, the median and range of the
per-pair ratios torch/jax; > 1: seedx_jax is faster), prints jax's compile time apart and a quick agreement
check, and its fraction of the machine's ceiling measured in the same run (FLOP-bound rows: the torch flop
counter's FLOPs / jax median time / peak fp32 matmul FLOP/s; decode: bytes per token / bandwidth / time per
token). Then issue 20's "Must show" targets with PASS / MISS. docs/benchmarks.md explains every row.
Run it on an idle machine: PyTorch's threads collapse under load (a warning is printed when the load
average is above 0.5).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from out_path import output_file_problem  # noqa: E402 (bench/ on the path first)

ROWS = ("forward", "train", "train_remat", "vit", "i2t_ttft", "i2t_decode", "int8_decode", "t2i_ttft",
        "t2i_forced", "unet",
        "unet_stage2", "vae", "stage1_4", "stage1_20", "stage2_4", "stage2_20", "bf16_train")
CEILING = {"small": (2048, 512), "tiny": (256, 16)}  # matmul side, bandwidth array MB


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small", choices=("small", "tiny"), help="model sizes (default: small)")
    p.add_argument("--only", action="append", choices=ROWS, metavar="ROW",
                   help=f"run only these rows (repeatable): {', '.join(ROWS)}")
    p.add_argument("--pairs", type=int, default=5, help="interleaved torch/jax pairs per row after warm-up")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: the cores)")
    p.add_argument("--remat", default="full", choices=("full", "dots", "dots_no_batch"),
                   help="our policy for the gradient-checkpointing row (torch: per-layer checkpointing)")
    p.add_argument("--curve-steps", type=int, default=None, help="bf16 row: loss-curve steps (small 50, tiny 3)")
    p.add_argument("--no-ceiling", action="store_true", help="skip measuring the machine's limits")
    p.add_argument("--json", metavar="PATH", help="write the machine, the ceilings and every row to this file")
    args = p.parse_args(argv)
    for name in ("pairs", "threads", "curve_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')}={value} must be >= 1")
    if args.json is not None and (problem := output_file_problem(args.json)):
        p.error(f"--json {args.json!r} {problem}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)  # before any torch work: the pool size is fixed at first use

    import ceiling
    import report
    from rows_agent import agent_rows
    from rows_image import image_rows
    from rows_train import bf16_row, train_rows, vit_row
    from sizes import get_sizes

    sizes = get_sizes(args.size)
    only = tuple(args.only or ROWS)
    info = ceiling.machine_info()
    if info["load_avg_1min"] > 0.5:
        print(f"WARNING: load average {info['load_avg_1min']:.2f} > 0.5 - another process is running; the timings "
              "(PyTorch's above all) are not those of an idle machine", flush=True)
    limits = None if args.no_ceiling else ceiling.measure(*CEILING[args.size])
    report.print_machine(info, limits)
    print(f"sizes ({args.size}): {sizes.describe()}; fp32 unless said; {args.pairs} pairs per row", flush=True)

    t0 = time.perf_counter()
    rows = []
    report.print_header()
    steps = {"small": 50, "tiny": 3}[args.size] if args.curve_steps is None else args.curve_steps
    groups = [(("forward", "train", "train_remat"), lambda: train_rows(sizes, args.pairs, args.remat, only)),
              (("vit",), lambda: [vit_row(sizes, args.pairs)]),
              (("i2t_ttft", "i2t_decode", "int8_decode", "t2i_ttft", "t2i_forced"), lambda: agent_rows(sizes, args.pairs, only)),
              (("unet", "unet_stage2", "vae", "stage1_4", "stage1_20", "stage2_4", "stage2_20"),
               lambda: image_rows(sizes, args.pairs, only, (4, 20))),
              (("bf16_train",), lambda: [bf16_row(sizes, args.pairs, steps)])]
    for keys, run in groups:
        if set(keys) & set(only):
            for row in run():
                rows.append(row.summary(limits and limits["peak_fp32"], limits and limits["bandwidth"]))
                report.print_rows(rows[-1:])
                sys.stdout.flush()
    print(f"\nall rows ({time.perf_counter() - t0:.0f} s):", end="")
    report.print_header()
    report.print_rows(rows)
    targets = report.must_show(rows)
    report.print_must_show(targets)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=info, ceiling=limits, size=args.size, pairs=args.pairs, rows=rows,
                           must_show=targets), f, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
