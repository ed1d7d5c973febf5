"""Reduced precision against our own fp32 (docs/precision.md), on the "small" LLM of issue 20.

    .venv/bin/python bench/bench_precision.py [--only train|decode|table] [--layers 4 --hidden 512 ...]

train: the LoRA SFT step (`make_train_step`, r=32 + norms + embeddings/lm_head, AdamW, clip 1.0) in
  fp32 and in bf16 compute (fp32 master weights), the same initial weights and batches, one step of
  each in turn for `--train-steps` steps: median seconds per step (after 3 warm-up steps), the ratio,
  and the two loss curves (max / mean relative difference). Also the compiled step's dot dtypes and
  XLA's cost analysis, to show where bf16 time goes.
decode: batch-1 greedy decoding of `--new-tokens` tokens in fp32, bf16, int8 weights and int8 + bf16,
  interleaved; tokens/s from (time(N tokens) - time(1 token)) / (N - 1), and the weight bytes.
table: `seedx_jax.precision_accuracy.accuracy_table` on the same config.
"""
from __future__ import annotations

import argparse
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seedx_jax.llama import LlamaConfig, LlamaForCausalLM, generate
from seedx_jax.lora import LoraConfig, trainable_filter
from seedx_jax.losses import next_token_loss
from seedx_jax.precision import Precision
from seedx_jax.precision_accuracy import TABLE_HEADER, accuracy_table
from seedx_jax.quantization import weight_bytes
from seedx_jax.train.step import init_state, make_train_step, split_trainable


def llm_config(args) -> LlamaConfig:
    return LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       max_position_embeddings=max(args.seq, args.prompt + args.new_tokens))


def learnable_batches(args, count: int) -> list[dict]:
    """Rows that follow a fixed random successor table from random starts: a loss that falls."""
    rng = np.random.default_rng(0)
    successor = rng.permutation(args.vocab)
    out = []
    for _ in range(count):
        ids = np.empty((1, args.batch, args.seq), np.int32)
        ids[..., 0] = rng.integers(0, args.vocab, (1, args.batch))
        for t in range(1, args.seq):
            ids[..., t] = successor[ids[..., t - 1]]
        out.append({"ids": jnp.asarray(ids)})
    return out


def lm_loss(model, micro, rng):
    return next_token_loss(model(micro["ids"], dropout_rng=rng).logits, micro["ids"]), {}


def train_runner(cfg: LlamaConfig, precision: Precision, lr: float):
    model = LlamaForCausalLM(precision.configure(cfg), rngs=nnx.Rngs(0))  # same seed: same fp32 weights
    graphdef, params, rest = split_trainable(model, trainable_filter(cfg.lora))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.05))
    step = make_train_step(graphdef, lm_loss, tx)
    holder = {"state": init_state(params, tx, jax.random.key(0))}

    def run(batch) -> float:
        holder["state"], metrics = step(holder["state"], rest, batch)
        return float(metrics["loss"])

    return run, step, rest, holder


def dot_dtypes(compiled_text: str) -> dict[str, int]:
    """Counts of `dot`/oneDNN/custom-call matmul result types in compiled HLO text."""
    counts: dict[str, int] = {}
    for m in re.finditer(r"= (\w+)\[[^\]]*\][^=]*? (?:dot|custom-call)\(", compiled_text):
        counts[m[1]] = counts.get(m[1], 0) + 1
    return counts


def bench_train(args, cfg):
    cfg = cfg.replace(lora=LoraConfig(rank=32, alpha=32.0, dropout=0.05))
    batches = learnable_batches(args, 8)
    runs = {name: train_runner(cfg, Precision(compute_dtype=dtype), args.lr)
            for name, dtype in (("fp32", "float32"), ("bf16", "bfloat16"))}
    losses = {name: [] for name in runs}
    times = {name: [] for name in runs}
    for i in range(args.train_steps):
        order = list(runs) if i % 2 == 0 else list(runs)[::-1]  # alternate who goes first
        for name in order:
            t0 = time.perf_counter()
            losses[name].append(runs[name][0](batches[i % len(batches)]))
            times[name].append(time.perf_counter() - t0)
    print(f"train step, batch {args.batch} x {args.seq}, {args.layers} layers d={args.hidden}, LoRA r=32 SFT set")
    med = {}
    for name in runs:
        steady = times[name][3:]
        med[name] = statistics.median(steady)
        print(f"  {name}: median {med[name] * 1e3:.1f} ms/step (min {min(steady) * 1e3:.1f}, max "
              f"{max(steady) * 1e3:.1f}, first incl. compile {times[name][0]:.1f} s)")
    print(f"  bf16 speed-up over fp32: {med['fp32'] / med['bf16']:.2f}x (target >= 1.8x)")
    fp32, bf16 = np.array(losses["fp32"]), np.array(losses["bf16"])
    rel = np.abs(bf16 - fp32) / np.abs(fp32)
    print(f"  loss fp32 {fp32[0]:.4f} -> {fp32[-1]:.4f}, bf16 {bf16[0]:.4f} -> {bf16[-1]:.4f}; relative difference "
          f"over {len(fp32)} steps: max {rel.max() * 100:.2f}%, mean {rel.mean() * 100:.2f}% (target <= 2%)")
    for name, (_, step, rest, holder) in runs.items():
        compiled = step.lower(holder["state"], rest, batches[0]).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        print(f"  {name} compiled: matmul result types {dot_dtypes(compiled.as_text())}, "
              f"XLA flops {cost.get('flops', 0) / 1e9:.2f} G, bytes accessed {cost.get('bytes accessed', 0) / 1e6:.0f} MB")


def bench_decode(args, cfg):
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, args.prompt), dtype=np.int32)
    ref = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    variants = {"fp32": Precision(), "bf16": Precision(compute_dtype="bfloat16"),
                "int8": Precision(llm_weights="int8"),
                "int8+bf16": Precision(compute_dtype="bfloat16", llm_weights="int8")}
    models = {name: p.apply(ref) for name, p in variants.items()}
    for model in models.values():  # compile both lengths
        for n in (1, args.new_tokens):
            np.asarray(generate(model, prompt, n).tokens)
    per_token = {name: [] for name in models}
    for _ in range(args.reps):
        for name, model in models.items():
            spans = []
            for n in (1, args.new_tokens):
                t0 = time.perf_counter()
                np.asarray(generate(model, prompt, n).tokens)
                spans.append(time.perf_counter() - t0)
            per_token[name].append((spans[1] - spans[0]) / (args.new_tokens - 1))
    print(f"decode, batch 1, prompt {args.prompt}, {args.new_tokens} new tokens, {args.reps} interleaved reps")
    base = statistics.median(per_token["fp32"])
    for name, model in models.items():
        t = statistics.median(per_token[name])
        print(f"  {name}: {1 / t:.0f} tokens/s (min-max {1 / max(per_token[name]):.0f}-{1 / min(per_token[name]):.0f}), "
              f"{base / t:.2f}x fp32, weights {weight_bytes(model) / 1e6:.1f} MB")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp", type=int, default=1376)
    p.add_argument("--vocab", type=int, default=842)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-steps", type=int, default=50)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only", choices=["train", "decode", "table"], action="append")
    args = p.parse_args()
    cfg = llm_config(args)
    only = args.only or ["train", "decode", "table"]
    print(f"devices: {jax.devices()}")
    if "train" in only:
        bench_train(args, cfg)
    if "decode" in only:
        bench_decode(args, cfg)
    if "table" in only:
        print(f"accuracy vs fp32, {args.layers} layers d={args.hidden} vocab {args.vocab}, 4 prompts, 64 tokens")
        print(TABLE_HEADER)
        for row in accuracy_table(cfg):
            print(row.line())


if __name__ == "__main__":
    main()
