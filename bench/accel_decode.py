"""Suite part `decode`: greedy decoding of a Llama-2-13B-shaped LLM, our `generate` against transformers'
`LlamaForCausalLM.generate` (eager, SDPA attention, its default dynamic cache) on the same device, with
the same weights (random: the comparison is of speed), at batch 1 and 8 after a long prompt.

Time per decode step: (t(prompt + N_long new) - t(prompt + N_short new)) / (N_long - N_short), each
t the median of interleaved calls, so the prefill cancels out. Tokens/s = batch / time per step.
Bandwidth limit: a step must read every weight in the path once (the 7 projections per layer and the
lm_head, plus the norms) and the live KV cache (2 x layers x batch x context x kv_heads x head_dim,
context = the prompt plus the mid-point of the timed new tokens); achieved bandwidth = those bytes /
time per step, divided by the peak (the suite). The greedy ids of the N_short runs are compared.
Our attention is XLA's here (`--attention` is not used): a decode step reads the cache once whatever
the kernel, and the prefill, where a fused kernel would help, is not in the timed difference.
"""
from __future__ import annotations

from accel_common import Budget, Recorder, state_numpy, timed_interleaved, torch_device, torch_sync

SIZES = {"gpu": dict(layers=10, prompt=3968, short=16, long=128, batches=(1, 8), repeats=3),
         "smoke": dict(layers=2, prompt=48, short=2, long=34, batches=(2,), repeats=2)}


def model_config(args, sizes: dict):
    from seedx_jax.llama import LlamaConfig

    max_len = sizes["prompt"] + sizes["long"]
    if args.smoke:  # float32: the greedy ids must then agree exactly
        return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=sizes["layers"],
                           num_attention_heads=4, max_position_embeddings=max_len)
    return LlamaConfig.preset("llama2_13b", num_hidden_layers=args.layers or sizes["layers"], dtype="bfloat16",
                              param_dtype="bfloat16", max_position_embeddings=max(max_len, 4096))


def bytes_per_step(cfg, batch: int, context: float) -> float:
    """Weights in the path + the live KV cache, in the compute dtype (see the module docstring)."""
    d, f, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    weights = layers * (2 * d * q + 2 * d * kv + 3 * d * f + 2 * d) + d * cfg.vocab_size + d
    cache = 2 * layers * batch * context * kv
    return (weights + cache) * cfg.compute_dtype.itemsize


def _torch_model(cfg, device: str):
    import torch
    from transformers import LlamaConfig as HFLlamaConfig, LlamaForCausalLM as HFLlama

    torch.manual_seed(0)
    with torch.device(device):
        model = HFLlama._from_config(HFLlamaConfig(**cfg.to_hf_dict()), attn_implementation="sdpa")
    return model.to(getattr(torch, cfg.dtype)).eval()


def _agreement(ours, theirs) -> dict:
    """Greedy ids [B, N] of both sides: equal positions, and the first position where a row differs."""
    import numpy as np

    same = np.asarray(ours) == np.asarray(theirs)
    first = [int(np.argmin(row)) if not row.all() else None for row in same]
    return {"equal": int(same.sum()), "total": int(same.size), "first_difference_per_row": first}


def run(args, rec: Recorder, budget: Budget) -> None:
    import jax
    import numpy as np
    from flax import nnx

    from seedx_jax.llama import LlamaForCausalLM, generate
    from seedx_jax.llama.params import load_hf_llama

    sizes = SIZES["smoke" if args.smoke else "gpu"]
    device, line = torch_device(jax.devices()[0].platform)
    rec.note(line)
    cfg = model_config(args, sizes)
    ref = _torch_model(cfg, device) if device else None
    ours = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    if ref is not None:
        load_hf_llama(ours, state_numpy(ref), strict=True)
    rec.detail("config", dict(layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, vocab=cfg.vocab_size,
                              dtype=cfg.dtype, prompt=sizes["prompt"], new_tokens=(sizes["short"], sizes["long"]),
                              attention=cfg.attention_impl, torch_attention="sdpa" if ref is not None else None))
    short, long = sizes["short"], sizes["long"]
    for batch in sizes["batches"]:
        if budget.left() < 0.25 * args.budget:
            rec.note(f"batch {batch} skipped: {budget.left():.0f} s left of the part's budget")
            continue
        prompt = np.random.default_rng(batch).integers(0, cfg.vocab_size, (batch, sizes["prompt"]))
        outputs = {}

        def ours_call(n):
            def call():
                outputs[("ours", n)] = np.asarray(generate(ours, prompt, n).tokens)  # waits for the device
            return call

        def torch_call(n):
            import torch

            ids = torch.tensor(prompt, device=device)

            def call():
                with torch.no_grad():
                    out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                       do_sample=False, eos_token_id=None, pad_token_id=0)
                torch_sync(device)
                outputs[("torch", n)] = out[:, prompt.shape[1]:].cpu().numpy()
            return call

        fns = {"ours_short": ours_call(short), "ours_long": ours_call(long)}
        if ref is not None:
            fns.update(torch_short=torch_call(short), torch_long=torch_call(long))
        t = timed_interleaved(fns, sizes["repeats"], budget, reserve_s=0.1 * args.budget)
        per_step = {side: (t[f"{side}_long"]["median_s"] - t[f"{side}_short"]["median_s"]) / (long - short)
                    for side in ("ours", "torch") if f"{side}_short" in t}
        rate = {side: batch / s if s > 0 else None for side, s in per_step.items()}  # s <= 0: timing noise
        context = sizes["prompt"] + (short + long) / 2
        moved = bytes_per_step(cfg, batch, context)
        detail = {"timings": t, "step_s": per_step, "bytes_per_step": moved}
        if ref is not None:
            detail["greedy_ids"] = _agreement(outputs[("ours", short)], outputs[("torch", short)])
            rec.note(f"batch {batch}: greedy ids equal at {detail['greedy_ids']['equal']} of "
                     f"{detail['greedy_ids']['total']} positions ({short} new tokens per row)")
        rec.detail(f"batch_{batch}", detail)
        compile_s = max(t["ours_short"]["first_s"] - t["ours_short"]["median_s"], 0.0)
        rec.row(f"greedy decode, {cfg.num_hidden_layers} layers d={cfg.hidden_size}, batch {batch}, "
                f"context {context:.0f}", "tok/s", rate["ours"], rate.get("torch"), achieved=rate["ours"] and moved * rate["ours"] / batch,
                ceiling="bandwidth", ours_compile_s=compile_s,
                torch_first_s=t["torch_short"]["first_s"] if ref is not None else None)
