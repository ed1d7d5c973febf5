"""`python -m seedx_jax.demo [--out DIR] [--overwrite] [--seed N] [--quick] [--train-scenes N]
[--test-scenes N]`: trains a tiny SEED-X on the shapes world and writes the report folder (index.html,
metrics.json, curves, samples, the trained pipelines). Without --quick it is the full run, about 20
minutes on 2 CPU cores.

Bad arguments and a refused `--out` (a folder of other files, or an earlier report without
`--overwrite`) exit 2 with one line before anything is trained; Ctrl-C / SIGTERM remove the partial
report and exit 130 / 143 with one line."""
import dataclasses
import json
import math
import os
import sys

from seedx_jax.exits import ArgumentParser, describe, error_line, exit_code, interrupts_as_exceptions

MAX_SCENES = 1_000_000


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m seedx_jax.demo", description=__doc__)
    parser.add_argument("--out", default="demo_report",
                        help="report folder, created when the run succeeds (default: demo_report)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo report in --out")
    parser.add_argument("--seed", type=int, default=0, help="world, initialisation and data-order seed, in [0, 2**31)")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps of everything: a smoke test of several minutes whose figures mean nothing")
    parser.add_argument("--train-scenes", type=int, help="training scenes (default 3000; quick 48)")
    parser.add_argument("--test-scenes", type=int, help="held-out scenes (default 100; quick 3)")
    args = parser.parse_args(argv)
    if not args.out.strip():
        parser.error("--out is empty: give the report folder")
    if not 0 <= args.seed < 2 ** 31:
        parser.error(f"--seed {args.seed} must be in [0, 2**31)")
    for name in ("train_scenes", "test_scenes"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= MAX_SCENES:
            parser.error(f"--{name.replace('_', '-')} {value} must be in [1, {MAX_SCENES}]")
    from seedx_jax.demo.run import KIND, QUICK, DemoOptions, run_demo
    from seedx_jax.outputs import OutputError, check_target

    opts = QUICK if args.quick else DemoOptions()
    opts = dataclasses.replace(opts, seed=args.seed, **{k: v for k, v in (("train_scenes", args.train_scenes),
                                                                          ("test_scenes", args.test_scenes)) if v})
    try:
        with interrupts_as_exceptions():
            check_target(args.out, KIND, overwrite=args.overwrite)
            metrics = run_demo(args.out, opts, overwrite=args.overwrite)
    except (OutputError, OSError) as err:  # the output folder, or the disk
        print(f"python -m seedx_jax.demo: error: {error_line(err)}", file=sys.stderr)
        return 2
    except BaseException as err:
        if isinstance(err, (SystemExit, Exception)):
            raise
        print(f"\npython -m seedx_jax.demo: {describe(err)}; no report was written", file=sys.stderr)
        return exit_code(err)
    print(json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()},
                     indent=1, sort_keys=True))  # strict JSON, as metrics.json: nothing to score -> null
    print(f"report: {args.out}/index.html", file=sys.stderr)
    return 0


if __name__ == "__main__":
    code = main()
    if code in (130, 143):  # interrupted: XLA's threads may still run; a normal interpreter exit can crash in them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
