"""Converting a synthetic multi-GB Llama-shaped checkpoint: wall time and peak host memory (RSS).

    .venv/bin/python bench/bench_convert.py [--hidden 2560 --intermediate 6912 --layers 20 --vocab 32000
                                             --source-dtype float16 --dtype bfloat16 --workdir DIR]

Writes a Hugging Face folder of random weights (sharded safetensors), then, each in a fresh process:
  * seedx_jax: `python -m seedx_jax.convert llama DIR --out CKPT` (streams one tensor at a time);
  * PyTorch reference: `transformers.LlamaForCausalLM.from_pretrained(DIR)` - what loading the same
    folder costs the PyTorch way (the whole model in memory).
Prints wall time and peak RSS of each (from `wait4`), the ratio seedx_jax / torch, and the peak next
to the checkpoint size and the largest stacked parameter. A process that only imports JAX and
seedx_jax is measured too, so its baseline can be told apart from the conversion's own memory.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
GB = 1e9


def synthetic_llama(folder: pathlib.Path, args) -> int:
    """Random weights in HF key layout, generated and written one shard at a time; returns bytes."""
    sys.path.insert(0, str(ROOT))
    from seedx_jax.convert.export import write_safetensors

    h, m, v, dtype = args.hidden, args.intermediate, args.vocab, np.dtype(args.source_dtype)
    rng = np.random.default_rng(0)

    def tensors():
        def rand(*shape):
            return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(dtype)
        yield "model.embed_tokens.weight", rand(v, h)
        for i in range(args.layers):
            p = f"model.layers.{i}."
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                yield p + f"self_attn.{name}.weight", rand(h, h)
            yield p + "mlp.gate_proj.weight", rand(m, h)
            yield p + "mlp.up_proj.weight", rand(m, h)
            yield p + "mlp.down_proj.weight", rand(h, m)
            yield p + "input_layernorm.weight", np.ones(h, dtype)
            yield p + "post_attention_layernorm.weight", np.ones(h, dtype)
        yield "model.norm.weight", np.ones(h, dtype)
        yield "lm_head.weight", rand(v, h)

    folder.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v, "hidden_size": h,
              "intermediate_size": m, "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
              "num_key_value_heads": args.heads, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
              "torch_dtype": args.source_dtype, "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config))
    files = write_safetensors(str(folder), "model", tensors(), max_shard_bytes=2 << 30)
    return sum(os.path.getsize(f) for f in files)


def measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS GB, stderr tail) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss * 1024 / GB, err.strip().splitlines()[-1] if err.strip() else ""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=2560)
    p.add_argument("--intermediate", type=int, default=6912)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--heads", type=int, default=20)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--source-dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="converted parameter dtype")
    p.add_argument("--flush-mb", type=int, default=128)
    p.add_argument("--workdir", default="/tmp/seedx_bench_convert")
    p.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint and the output")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    work = pathlib.Path(args.workdir)
    if args.generate_only:
        synthetic_llama(work / "llama", args)
        return
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    # in a child process, so this one stays small: a forked child's peak RSS counts its parent's pages
    subprocess.run([sys.executable, __file__, "--generate-only", *sys.argv[1:]], check=True)
    size = sum(f.stat().st_size for f in (work / "llama").glob("*.safetensors"))
    print(f"synthetic checkpoint: {size / GB:.2f} GB ({args.source_dtype}, {args.layers} layers, hidden "
          f"{args.hidden}) written in {time.perf_counter() - start:.0f} s")
    itemsize = np.dtype("float32" if args.dtype == "float32" else "float16").itemsize
    largest = max(args.layers * args.hidden * args.intermediate, args.vocab * args.hidden) * itemsize
    print(f"largest stacked parameter ({args.dtype}): {largest / GB:.2f} GB")

    python = sys.executable
    rows = []
    wall, rss, _ = measured([python, "-c", "import jax, seedx_jax.convert.cli; jax.devices()"])
    rows.append(("import jax + seedx_jax only", wall, rss))
    wall, rss, last = measured([python, "-m", "seedx_jax.convert", "llama", str(work / "llama"), "--out",
                                str(work / "ckpt"), "--dtype", args.dtype, "--flush-mb", str(args.flush_mb)])
    rows.append(("seedx_jax convert (streaming)", wall, rss))
    ours = (wall, rss)
    if not args.skip_torch:
        torch_dtype = {"bfloat16": "torch.bfloat16", "float32": "torch.float32"}[args.dtype]
        wall, rss, _ = measured([python, "-c", "import torch, transformers; transformers.LlamaForCausalLM."
                                 f"from_pretrained({str(work / 'llama')!r}, torch_dtype={torch_dtype})"])
        rows.append(("torch: LlamaForCausalLM.from_pretrained", wall, rss))
    print(f"\n{'':42s} {'wall s':>8s} {'peak RSS GB':>12s}")
    for name, wall, rss in rows:
        print(f"{name:42s} {wall:8.1f} {rss:12.2f}")
    print(f"\npeak RSS of the conversion: {ours[1]:.2f} GB for a {size / GB:.2f} GB checkpoint "
          f"(largest stacked parameter {largest / GB:.2f} GB, flush every {args.flush_mb} MiB)")
    if not args.skip_torch:
        print(f"ratio seedx_jax / torch: wall {ours[0] / rows[2][1]:.2f}x, peak RSS {ours[1] / rows[2][2]:.2f}x")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
