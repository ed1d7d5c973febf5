"""`python -m seedx_jax.demo [--out DIR] [--seed N] [--quick]` (run from the repository root): trains a
tiny SEED-X on the shapes world and writes the report folder (see seedx_jax/demo/run.py)."""
import argparse
import dataclasses
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedx_jax.demo", description=__doc__)
    parser.add_argument("--out", default="demo_report", help="report folder (replaced when the run succeeds)")
    parser.add_argument("--seed", type=int, default=0, help="world, initialisation and data-order seed")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test, ~2 min)")
    parser.add_argument("--train-scenes", type=int, help="training scenes (default 3000; quick 48)")
    parser.add_argument("--test-scenes", type=int, help="held-out scenes (default 100; quick 3)")
    args = parser.parse_args(argv)
    from seedx_jax.demo.run import QUICK, DemoOptions, run_demo

    opts = QUICK if args.quick else DemoOptions()
    opts = dataclasses.replace(opts, seed=args.seed, **{k: v for k, v in (("train_scenes", args.train_scenes),
                                                                          ("test_scenes", args.test_scenes)) if v})
    for name in ("train_scenes", "test_scenes"):
        if getattr(opts, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    metrics = run_demo(args.out, opts)
    print(json.dumps(metrics, indent=1, sort_keys=True))
    print(f"report: {args.out}/index.html", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
