"""The accelerator suite: one command, under 8 minutes on one H100 / H200, every figure against the device's
own ceiling and, where PyTorch runs on the same device, against the PyTorch original.

    .venv/bin/python bench/accel_suite.py --out accel_results.json      # on a GPU (docs/accelerators.md)
    .venv/bin/python bench/accel_suite.py --smoke --out /tmp/accel.json   # tiny shapes on the CPU, < 60 s

Parts, each in its own process with its own time limit (a part that runs over is stopped and keeps
the rows it finished; the time a part leaves unused passes to the next):
  ceilings  the device, which torch runs beside it, measured bf16 matmul FLOP/s and copy bandwidth
  train     MFU of a Llama-2-13B-shaped LoRA SFT step (bench/accel_train.py says which FLOPs)
  decode    greedy decode tokens/s at batch 1 and 8 after a ~4k-token prompt, ours vs transformers,
            and the fraction of the HBM bandwidth limit (bench/accel_decode.py)
  sdxl      SDXL 1024 px, batch 4, 20 Euler steps with CFG, ours vs diffusers (bench/accel_sdxl.py)
Prints one table (ours and torch as throughputs, ours/torch > 1: ours faster, the fraction of the
datasheet peak and of the measured ceiling, compile seconds apart) and writes all figures as JSON.
When torch has no CUDA (or transformers / diffusers are missing) the suite says so in one line and
skips the PyTorch figures; ours still run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import accel_ceilings
import accel_decode
import accel_sdxl
import accel_train
from accel_common import Budget, Recorder, device_ceilings
from out_path import output_file_problem

PARTS = {"ceilings": accel_ceilings, "train": accel_train, "decode": accel_decode, "sdxl": accel_sdxl}
# Seconds per part on a GPU: the sum stays under 8 minutes with the suite's own start-up.
GPU_BUDGET_S = {"ceilings": 35, "train": 120, "decode": 165, "sdxl": 140}
SMOKE_BUDGET_S = {"ceilings": 20, "train": 40, "decode": 40, "sdxl": 40}
# JAX's share of the GPU memory in each part's process: the rest is left to torch beside it.
MEMORY_FRACTION = {"ceilings": "0.5", "train": "0.9", "decode": "0.45", "sdxl": "0.45"}
SMOKE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
KILL_GRACE_S = 10.0  # a part's process gets this long past its budget before it is stopped


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="JSON file of every figure (default: accel_results.json, with --smoke "
                                 "accel_smoke.json)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (< 60 s): checks the suite runs")
    p.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS), help="parts to run, in order")
    p.add_argument("--attention", default="cudnn", choices=("cudnn", "xla"),
                   help="our attention kernel for the train and sdxl parts (falls back to xla if refused; "
                        "the smoke run uses xla)")
    p.add_argument("--layers", type=int, default=0, help="Llama layers for train and decode (0: 10, the default "
                                                         "that fits the time on an H100 / H200)")
    p.add_argument("--train-batch", type=int, default=0, help="train rows (0: 8)")
    p.add_argument("--train-seq", type=int, default=0, help="train tokens per row (0: 2048)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every part's time limit")
    # a part's own process (started by the suite)
    p.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    p.add_argument("--part-out", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("layers", "train_batch", "train_seq"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 0")
    if not args.budget_scale > 0:
        p.error(f"--budget-scale={args.budget_scale} must be > 0")
    if args.smoke:
        args.attention = "xla"
    if args.part is None:
        args.out = args.out if args.out is not None else "accel_smoke.json" if args.smoke else "accel_results.json"
        if problem := output_file_problem(args.out):
            p.error(f"--out {args.out!r} {problem}")
    return args


def run_part(args) -> None:
    """In a part's process: measure, writing rows to --part-out as they are finished."""
    rec = Recorder(args.part_out, args.part)
    rec.detail("device", device_ceilings())
    PARTS[args.part].run(args, rec, Budget(args.budget))


def _part_command(args, part: str, budget_s: float, out: str) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--part", part, "--part-out", out, "--budget", f"{budget_s:.0f}",
           "--attention", args.attention, "--layers", str(args.layers), "--train-batch", str(args.train_batch),
           "--train-seq", str(args.train_seq)]
    return cmd + (["--smoke"] if args.smoke else [])


def _part_env(args, part: str) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", MEMORY_FRACTION[part])
    if args.smoke:
        env.setdefault("JAX_PLATFORMS", "cpu")
        env.setdefault("OMP_NUM_THREADS", "1")  # torch's CPU threads spin and collapse on a shared machine
        # as tests/conftest.py: tiny models spend seconds compiling, milliseconds running
        flags = env.get("XLA_FLAGS", "")
        if "xla_backend_optimization_level" not in flags:
            env["XLA_FLAGS"] = f"{flags} {SMOKE_XLA_FLAGS}".strip()
    return env


def run_suite(args) -> dict:
    budgets = SMOKE_BUDGET_S if args.smoke else GPU_BUDGET_S
    start = time.monotonic()
    results, carried = {}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            budget_s = budgets[part] * args.budget_scale + carried
            out = os.path.join(tmp, f"{part}.json")
            print(f"== {part} (limit {budget_s:.0f} s)", flush=True)
            part_start = time.monotonic()
            try:
                rc = subprocess.run(_part_command(args, part, budget_s, out), env=_part_env(args, part),
                                    timeout=budget_s + KILL_GRACE_S).returncode
                error = None if rc == 0 else f"the part's process exited with status {rc}"
            except subprocess.TimeoutExpired:
                error = f"stopped after its limit of {budget_s:.0f} s (+{KILL_GRACE_S:.0f} s)"
            used = time.monotonic() - part_start
            carried = max(budget_s - used, 0.0)
            data = _read(out) or {"part": part, "rows": [], "details": {}, "notes": []}
            data["wall_s"] = used
            print(f"== {part}: {used:.0f} s", flush=True)
            if error:
                data["error"] = error
                print(f"[{part}] {error}", flush=True)
            results[part] = data
    return _summary(args, results, time.monotonic() - start)


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _summary(args, parts: dict, wall_s: float) -> dict:
    """All rows with their fractions of the datasheet peak and of the measured ceiling."""
    device = next((d["details"]["device"] for d in parts.values() if "device" in d["details"]), {})
    ceilings = parts.get("ceilings", {}).get("details", {})
    peaks = {"bf16_flops": device.get("peak_bf16_flops"), "bandwidth": device.get("peak_bandwidth")}
    measured = {"bf16_flops": ceilings.get("measured_bf16_flops"), "bandwidth": ceilings.get("measured_bandwidth")}
    rows = []
    for data in parts.values():
        for row in data["rows"]:
            kind, achieved = row["ceiling"], row["achieved"]
            of_peak = achieved / peaks[kind] if kind and achieved and peaks[kind] else None
            of_measured = (achieved / measured[kind] if kind and achieved and measured[kind]
                           and row["part"] != "ceilings" else None)
            rows.append(dict(row, of_peak=of_peak, of_measured=of_measured))
    return {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "smoke": args.smoke,
            "device": device, "torch": ceilings.get("torch"), "peaks": peaks, "measured_ceilings": measured,
            "wall_s": wall_s, "rows": rows, "parts": parts}


def _fmt(value, spec: str, width: int) -> str:
    return ("-" if value is None else format(value, spec)).rjust(width)


def print_table(summary: dict) -> None:
    device = summary["device"]
    print(f"\ndevice: {device.get('kind', '?')} ({device.get('platform', '?')}), JAX {device.get('jax', '?')}; "
          f"{(summary.get('torch') or {}).get('line', 'torch: not checked')}")
    print(f"{'part':<9} {'figure':<64} {'unit':>7} {'ours':>10} {'torch':>10} {'ours/torch':>10} "
          f"{'of peak':>8} {'of meas.':>8} {'compile s':>9}")
    for r in summary["rows"]:
        print(f"{r['part']:<9} {r['name'][:64]:<64} {r['unit']:>7} {_fmt(r['ours'], '.4g', 10)} "
              f"{_fmt(r['torch'], '.4g', 10)} {_fmt(r['ratio'], '.2f', 9)}{'x' if r['ratio'] else ' '} "
              f"{_fmt(r['of_peak'], '.1%', 8)} {_fmt(r['of_measured'], '.1%', 8)} {_fmt(r['ours_compile_s'], '.1f', 9)}")
    for name, data in summary["parts"].items():
        if data.get("error"):
            print(f"{name}: {data['error']}")
    print(f"peak = datasheet (bf16 dense FLOP/s or HBM bytes/s); meas. = the ceilings part's measurement; "
          f"total {summary['wall_s']:.0f} s")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part:
        run_part(args)
        return 0
    summary = run_suite(args)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1, default=float)
    print_table(summary)
    print(f"wrote {args.out}")
    return 1 if any(d.get("error") for d in summary["parts"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
