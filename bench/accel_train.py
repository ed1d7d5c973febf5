"""Suite part `train`: model-FLOPs utilisation of a Llama-2-13B-shaped LoRA SFT step.

The step is the trainer's (`seedx_jax.train.step.make_train_step`: AdamW with clipping, non-finite
guard, donated state) on the settings of configs/llama2_13b_lora.py: fp32 master weights, bf16
compute, remat `dots_no_batch`, scanned layers, LoRA r=32 alpha 32 dropout 0.05 on q,k,v,o,gate,up,down,
with the norms, embed_tokens and lm_head trained. Llama-2-13B widths (hidden 5120, 40 heads,
intermediate 13824, SEED-X's vocab 32330) with fewer layers, so that compile + steps fit the budget.

FLOPs per step, with N = the matmul weights in the path (L x (4 d^2 + 3 d f) + lm_head d V; the
embedding is a gather), r-rank LoRA weights N_lora, tokens B T:
* `6N` (the model-FLOPs convention, as for full fine-tuning): 6 (N + N_lora) B T + 12 L B T^2 d
* `performed` (what a LoRA step must compute: frozen weights need input gradients only):
  (4 N_frozen + 6 (N_lora + d V)) B T + 12 L B T^2 d
The attention term (QK^T and AV, forward 4 L B T^2 d, backward twice that) counts the full T x T
product (PaLM's convention, no causal halving). Remat recomputation is not counted (model FLOPs, not
hardware FLOPs). XLA's cost analysis is no check here: it counts the body of the scanned layer stack
once, not once per layer (tests/test_accelerators.py checks `performed` on an unrolled stack).
MFU = FLOPs / step time / peak bf16 FLOP/s.
"""
from __future__ import annotations

import time

from accel_common import Budget, Recorder, timed_interleaved, with_attention_fallback

SIZES = {"gpu": dict(layers=10, batch=8, seq=2048, repeats=5),
         "smoke": dict(layers=2, batch=2, seq=64, repeats=2)}


def model_config(args, sizes: dict, attention: str):
    from seedx_jax.llama import LlamaConfig
    from seedx_jax.lora import LoraConfig

    shape = (LlamaConfig.preset("llama2_13b") if not args.smoke else
             LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=352, num_attention_heads=4))
    return shape.replace(num_hidden_layers=args.layers or sizes["layers"], param_dtype="float32", dtype="bfloat16",
                         scan_layers=True, remat="dots_no_batch", attention_impl=attention,
                         max_position_embeddings=max(sizes["seq"], 4096), lora=LoraConfig())


def step_flops(cfg, batch: int, seq: int) -> dict[str, float]:
    """The two FLOP counts of the module docstring for one step over [batch, seq] tokens."""
    d, f, v, layers = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, f), (d, f), (f, d)]  # q k v o gate up down
    frozen = layers * sum(i * o for i, o in shapes)
    lora = layers * cfg.lora.rank * sum(i + o for i, o in shapes)
    head = d * v
    tokens = batch * seq
    attention = 12.0 * layers * batch * seq ** 2 * q
    return {"6N": 6.0 * (frozen + lora + head) * tokens + attention,
            "performed": (4.0 * frozen + 6.0 * (lora + head)) * tokens + attention,
            "params_matmul": float(frozen + lora + head), "params_lora": float(lora)}


def build_step(cfg, batch: int, seq: int):
    """(compiled step, state, rest, batch, compile seconds)."""
    import jax
    import numpy as np
    from flax import nnx

    from seedx_jax.llama import LlamaForCausalLM
    from seedx_jax.losses import next_token_loss
    from seedx_jax.lora import trainable_filter
    from seedx_jax.train.optim import OptimConfig, make_optimizer
    from seedx_jax.train.step import init_state, make_train_step, split_trainable

    def loss_fn(model, micro, rng):
        return next_token_loss(model(micro["input_ids"], dropout_rng=rng).logits, micro["labels"]), {}

    optimizer = make_optimizer(OptimConfig())
    graphdef, params, rest = split_trainable(LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)), trainable_filter(cfg.lora))
    state = init_state(params, optimizer, jax.random.key(1))
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, batch, seq)).astype(np.int32)
    data = {"input_ids": jax.numpy.asarray(ids), "labels": jax.numpy.asarray(ids)}
    start = time.perf_counter()
    compiled = make_train_step(graphdef, loss_fn, optimizer).lower(state, rest, data).compile()
    return compiled, state, rest, data, time.perf_counter() - start


def run(args, rec: Recorder, budget: Budget) -> None:
    sizes = SIZES["smoke" if args.smoke else "gpu"]
    batch, seq = args.train_batch or sizes["batch"], args.train_seq or sizes["seq"]
    (compiled, state, rest, data, compile_s), attention = with_attention_fallback(
        lambda impl: build_step(model_config(args, sizes, impl), batch, seq), args.attention, rec)
    cfg = model_config(args, sizes, attention)
    flops = step_flops(cfg, batch, seq)
    rec.detail("config", dict(layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, heads=cfg.num_attention_heads,
                              intermediate=cfg.intermediate_size, vocab=cfg.vocab_size, batch=batch, seq=seq,
                              dtype=cfg.dtype, param_dtype=cfg.param_dtype, remat=cfg.remat, attention=attention,
                              lora_rank=cfg.lora.rank))
    rec.detail("flops", flops)
    rec.detail("compile_s", compile_s)
    rec.note(f"{cfg.num_hidden_layers} layers, {flops['params_matmul'] / 1e9:.2f}e9 matmul params, batch {batch} x "
             f"{seq} tokens, attention {attention}: compiled in {compile_s:.1f} s")

    holder = {"state": state}
    losses = []

    def one_step():
        holder["state"], metrics = compiled(holder["state"], rest, data)
        losses.append(float(metrics["loss"]))  # also waits for the step

    t = timed_interleaved({"ours": one_step}, sizes["repeats"], budget)["ours"]
    rec.detail("step_s", t)
    rec.detail("losses", losses)
    step_s, tokens = t["median_s"], batch * seq
    label = f"LoRA SFT step, {cfg.num_hidden_layers} layers d={cfg.hidden_size}, {batch}x{seq} tok"
    rec.row(f"{label}: MFU (6N)", "tok/s", tokens / step_s, achieved=flops["6N"] / step_s, ceiling="bf16_flops",
            ours_compile_s=compile_s)
    rec.row(f"{label}: MFU (performed)", "tok/s", tokens / step_s, achieved=flops["performed"] / step_s,
            ceiling="bf16_flops", ours_compile_s=compile_s)
