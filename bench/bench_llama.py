"""Llama train step (full and LoRA) and greedy decode loop: seedx_jax vs PyTorch, same config, one run.

    .venv/bin/python bench/bench_llama.py [--layers 4 --hidden 512 --batch 4 --seq 256 ...]

Prints median wall time per step for both and the ratio torch/jax (> 1: seedx_jax is faster).
The torch side is transformers' eager Llama (+ peft LoRA) with torch.optim.AdamW; the JAX side is
one jitted step (split -> value_and_grad -> optax AdamW, donated buffers) and `generate`.
Compile time is reported separately and excluded from the step times.
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import LlamaConfig as HFLlamaConfig, LlamaForCausalLM as HFLlama

from seedx_jax.llama import LlamaConfig, LlamaForCausalLM, generate
from seedx_jax.llama.params import load_hf_llama
from seedx_jax.lora import LORA_TARGETS, LoraConfig, trainable_filter
from seedx_jax.losses import next_token_loss


def timed(fn, steps: int, warmup: int) -> tuple[float, float]:
    """(first-call seconds incl. compile, median seconds of the following `steps` calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def jax_train_step(model: LlamaForCausalLM, wrt, ids, labels):
    """A closure running one donated, jitted AdamW step on the `wrt` parameters."""
    tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.05)
    graphdef, params, rest = nnx.split(model, wrt, ...)
    holder = {"params": params, "opt": tx.init(params)}

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, rest, ids, labels):
        def loss_fn(p):
            return next_token_loss(nnx.merge(graphdef, p, rest)(ids).logits, labels)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run():
        holder["params"], holder["opt"], loss = step(holder["params"], holder["opt"], rest, ids, labels)
        loss.block_until_ready()

    return run


def torch_train_step(model: torch.nn.Module, ids, labels):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    vocab = model.config.vocab_size

    def run():
        opt.zero_grad(set_to_none=True)
        logits = model(ids).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1))
        loss.backward()
        opt.step()

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--mlp", type=int, default=1408)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--prompt", type=int, default=32, help="decode: prompt length")
    p.add_argument("--new-tokens", type=int, default=64, help="decode: generated tokens")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--only", choices=["full", "lora", "decode"], action="append")
    args = p.parse_args()

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, max_position_embeddings=max(args.seq, 2048))
    lora = LoraConfig(rank=args.lora_rank, alpha=float(args.lora_rank), dropout=0.0)
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    print(f"devices: jax {jax.devices()[0].platform} x{jax.device_count()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); config: {args.layers} layers, d={args.hidden}, "
          f"heads={args.heads}/{args.kv_heads}, mlp={args.mlp}, vocab={args.vocab}, "
          f"batch={args.batch}, seq={args.seq}, fp32")

    rng = np.random.default_rng(0)
    ids_np = rng.integers(0, args.vocab, (args.batch, args.seq))
    ids_j, ids_t = jnp.asarray(ids_np, jnp.int32), torch.tensor(ids_np)
    rows = []
    todo = args.only or ["full", "lora", "decode"]

    def ref_model():
        torch.manual_seed(0)
        return HFLlama._from_config(HFLlamaConfig(**cfg.to_hf_dict()), attn_implementation="eager").float()

    def report(name, unit_count, unit, t_first, t_step, j_first, j_step):
        rows.append((name, t_step, j_step, t_step / j_step, j_first - j_step, unit_count / t_step,
                     unit_count / j_step, unit))

    if "full" in todo:
        ref = ref_model().train()
        ours = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
        load_hf_llama(ours, [(k, v.detach().numpy()) for k, v in ref.state_dict().items()])
        t = timed(torch_train_step(ref, ids_t, ids_t), args.steps, args.warmup)
        j = timed(jax_train_step(ours, nnx.Param, ids_j, ids_j), args.steps, args.warmup)
        report("train step, full", args.batch * args.seq, "tok/s", *t, *j)
        del ref, ours

    if "lora" in todo:
        ref = get_peft_model(ref_model(), PeftLoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
            modules_to_save=list(lora.modules_to_save))).train()
        ref.base_model.model.model.embed_tokens.weight.requires_grad_(True)
        ref.base_model.model.lm_head.weight.requires_grad_(True)
        lcfg = cfg.replace(lora=lora)
        ours = LlamaForCausalLM(lcfg, rngs=nnx.Rngs(0))
        load_hf_llama(ours, [(k, v.detach().numpy()) for k, v in ref.state_dict().items()])
        t = timed(torch_train_step(ref, ids_t, ids_t), args.steps, args.warmup)
        j = timed(jax_train_step(ours, trainable_filter(lora), ids_j, ids_j), args.steps, args.warmup)
        report(f"train step, LoRA r={lora.rank} (+norms, embeddings)", args.batch * args.seq, "tok/s", *t, *j)
        del ref, ours

    if "decode" in todo:
        ref = ref_model().eval()
        ours = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
        load_hf_llama(ours, [(k, v.detach().numpy()) for k, v in ref.state_dict().items()])
        prompt = ids_np[:1, :args.prompt]

        def torch_decode():
            with torch.no_grad():
                ref.generate(torch.tensor(prompt), max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                             do_sample=False, eos_token_id=None, pad_token_id=0)

        def jax_decode():
            generate(ours, prompt, args.new_tokens).tokens.block_until_ready()

        with torch.no_grad():
            want = ref.generate(torch.tensor(prompt), max_new_tokens=8, do_sample=False,
                                eos_token_id=None, pad_token_id=0)[0, args.prompt:].numpy()
        got = np.asarray(generate(ours, prompt, 8).tokens[0])
        print(f"decode check: greedy ids {'match' if (want == got).all() else 'DIFFER'} for 8 tokens")
        t = timed(torch_decode, args.steps, args.warmup)
        j = timed(jax_decode, args.steps, args.warmup)
        report(f"greedy decode, prompt {args.prompt} + {args.new_tokens} new, batch 1", args.new_tokens,
               "new tok/s", *t, *j)

    print()
    print(f"{'benchmark':<52} {'torch s':>9} {'jax s':>9} {'torch/jax':>10} {'jax compile s':>14}  throughput torch | jax")
    for name, t, j, ratio, compile_s, tput_t, tput_j, unit in rows:
        print(f"{name:<52} {t:>9.4f} {j:>9.4f} {ratio:>9.2f}x {compile_s:>14.1f}  "
              f"{tput_t:,.0f} | {tput_j:,.0f} {unit}")


if __name__ == "__main__":
    main()
