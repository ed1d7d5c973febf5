"""The SEED-X instruction-tuning step end to end: seedx_jax `make_train_step(mllm_loss)` vs the PyTorch
recipe of train_seed_x_sft.py, same weights, one run.

    .venv/bin/python bench/bench_train_sft.py [--layers 4 --hidden 512 --micro 2 --accumulation 2 ...]

Per optimizer step both sides: frozen ViT on every view (no grad), input resampler + patch positions
written into the sequence, LoRA Llama (r=32 on q,k,v,o,gate,up,down; norms and embeddings trained),
LM loss + 6 x MSE of the output resampler on one generation target per row, `accumulation`
micro-batches, clip_grad_norm 1.0, AdamW (0.9, 0.98, 1e-6, wd 0.05) with the warmup-cosine lambda.
Torch: the ViT statement of tests/torch_vision.py, the agent statement of tests/seedx_fixtures.py with
peft, eager. Prints median seconds per optimizer step and torch/jax (> 1: seedx_jax is faster).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from peft import LoraConfig as PeftLoraConfig, get_peft_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_agent_config import add_agent_args, agent_config  # noqa: E402
from bench_llama import timed  # noqa: E402
from seedx_fixtures import TorchAgent  # noqa: E402
from torch_llama import state_numpy  # noqa: E402
from torch_vision import TorchQwenViT  # noqa: E402

from seedx_jax.agent.model import SeedXAgent  # noqa: E402
from seedx_jax.agent.params import load_agent  # noqa: E402
from seedx_jax.lora import LORA_TARGETS, LoraConfig  # noqa: E402
from seedx_jax.train.optim import OptimConfig, make_optimizer  # noqa: E402
from seedx_jax.train.stages import MLLMTrainee, mllm_loss, trainable  # noqa: E402
from seedx_jax.train.step import init_state, make_train_step, split_trainable  # noqa: E402
from seedx_jax.vision.params import load_qwen_vit  # noqa: E402
from seedx_jax.vision.vit import QwenViT, VisionConfig  # noqa: E402

N = 64


def make_batch(args, base: int, rng) -> dict[str, np.ndarray]:
    """[A, micro, ...] rows: <patch>64</patch><img>64</img> (one 1x1 image), text, <img>64 generated</img>."""
    a, b, t, s = args.accumulation, args.micro, args.seq, args.view
    ids = rng.integers(3, base, (a, b, t))
    cmp = np.zeros((a, b, t), bool)
    gen = np.zeros((a, b, t), bool)
    cmp[..., 2:2 + N] = cmp[..., 4 + N:4 + 2 * N] = True
    gen[..., t - N - 20:t - 20] = True
    ids[gen] = base  # <img_00000>
    return dict(input_ids=ids.astype(np.int32), labels=ids.astype(np.int32), ids_cmp_mask=cmp, ids_gen_mask=gen,
                cmp_pixels=rng.normal(size=(a, b, 2, s, s, 3)).astype(np.float32),
                cmp_positions=np.full((a, b, 2, 2), 0.5, np.float32), cmp_valid=np.ones((a, b, 2), bool),
                gen_pixels=rng.normal(size=(a, b, 1, s, s, 3)).astype(np.float32), gen_valid=np.ones((a, b, 1), bool))


def torch_step(vit, agent, batch, optim_cfg: OptimConfig):
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim_cfg.learning_rate, betas=(optim_cfg.b1, optim_cfg.b2), eps=optim_cfg.eps,
                            weight_decay=optim_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / optim_cfg.warmup_steps))
    tb = {k: torch.from_numpy(v.astype(np.int64) if v.dtype == np.int32 else v) for k, v in batch.items()}

    def run():
        opt.zero_grad(set_to_none=True)
        for i in range(tb["input_ids"].shape[0]):
            with torch.no_grad():
                cmp = vit(tb["cmp_pixels"][i].flatten(0, 1).permute(0, 3, 1, 2))
                tgt = vit(tb["gen_pixels"][i].flatten(0, 1).permute(0, 3, 1, 2))
            loss = agent(tb["input_ids"][i], tb["ids_cmp_mask"][i], cmp, tb["cmp_positions"][i].flatten(0, 1),
                         tb["ids_gen_mask"][i], tgt, tb["labels"][i])[-1]
            (loss / tb["input_ids"].shape[0]).backward()
        torch.nn.utils.clip_grad_norm_(params, optim_cfg.max_grad_norm)
        opt.step()
        sched.step()

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_agent_args(p)
    p.add_argument("--seq", type=int, default=320)
    p.add_argument("--micro", type=int, default=2)
    p.add_argument("--accumulation", type=int, default=2)
    p.add_argument("--view", type=int, default=224, help="ViT input side")
    p.add_argument("--vit-width", type=int, default=256)
    p.add_argument("--vit-layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()

    d, c = args.hidden, args.feature_dim
    cfg = agent_config(args, LoraConfig(rank=32, alpha=32.0, dropout=0.0))
    llm = cfg.llm
    vit_cfg = VisionConfig(image_size=args.view, width=args.vit_width, layers=args.vit_layers, heads=8,
                           mlp_dim=4 * args.vit_width, output_dim=c, pool_heads=8)
    optim_cfg = OptimConfig(warmup_steps=10, total_steps=1000)
    torch.set_num_threads(os.cpu_count())

    ref_agent = TorchAgent(cfg.replace(llm=llm.replace(lora=None))).float().train()
    ref_vit = TorchQwenViT(vit_cfg).float().eval().requires_grad_(False)
    agent = SeedXAgent(cfg, rngs=nnx.Rngs(0))
    load_agent(agent, state_numpy(ref_agent))
    vit = QwenViT(vit_cfg, rngs=nnx.Rngs(1))
    load_qwen_vit(vit, [(k, v.numpy()) for k, v in ref_vit.state_dict().items()])
    ref_agent.llm = get_peft_model(ref_agent.llm, PeftLoraConfig(
        r=32, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
        modules_to_save=["input_layernorm", "post_attention_layernorm", "norm"]))
    for name in ("embed_tokens", "lm_head"):
        for module in ref_agent.llm.modules():
            if hasattr(module, name):
                getattr(module, name).weight.requires_grad_(True)

    batch = make_batch(args, args.base_vocab, np.random.default_rng(0))
    print(f"devices: jax {jax.devices()[0].platform}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"agent {args.layers} layers d={d}, ViT {args.vit_layers} layers w={args.vit_width} at {args.view} px, "
          f"{args.accumulation} x {args.micro} rows x {args.seq} tokens, 3 views per row, fp32")

    tx = make_optimizer(optim_cfg)
    graphdef, params, rest = split_trainable(MLLMTrainee(vit, agent), trainable("sft_comp_gen", llm.lora))
    holder = {"state": init_state(params, tx, jax.random.PRNGKey(0))}
    step = make_train_step(graphdef, mllm_loss, tx)
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}

    def jax_run():
        holder["state"], metrics = step(holder["state"], rest, jbatch)
        metrics["loss"].block_until_ready()

    t_first, t_step = timed(torch_step(ref_vit, ref_agent, batch, optim_cfg), args.steps, args.warmup)
    j_first, j_step = timed(jax_run, args.steps, args.warmup)
    print(f"{'optimizer step':<16} torch {t_step:.3f} s   jax {j_step:.3f} s   torch/jax {t_step / j_step:.2f}x   "
          f"(jax compile {j_first - j_step:.1f} s)")


if __name__ == "__main__":
    main()
