"""Training-side rows: the SFT train step without / with gradient checkpointing, the forward only (eval, ViT
included), the ViT alone, and our bf16 step against our fp32 step.

The batch (`sft_batch`): 2 micro-batches (the trainer's accumulation 2) of 2 rows: an any-res comprehension
sample (`comp_views` sub-images, one per micro-batch) and a text-to-image sample. Ours takes the row-local
slot layout of `seedx_jax.data.examples` (every row has max(comp_views) comprehension slots and 1
generation slot; the ViT runs on every slot, padding included); the official code runs the ViT on the real
images only (10 at the small size).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from seedx_jax.lora import LoraConfig
from seedx_jax.train.optim import OptimConfig, make_optimizer
from seedx_jax.train.stages import MLLMTrainee, mllm_loss, trainable
from seedx_jax.train.step import init_state, make_train_step, split_trainable

from sizes import Sizes
from timing import Row, compile_time, first_call, interleave
import torch_side

SFT_LORA = LoraConfig()  # r 32, alpha 32, dropout 0.05, norms saved, embeddings trained (SEED-X SFT)
OPTIM = OptimConfig(warmup_steps=10, total_steps=1000)


def sft_batch(s: Sizes, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`[2, 2, ...]` leaves (micro-batches x rows) in the layout `mllm_loss` reads."""
    n, t, k, side = s.num_image_tokens, s.seq, max(s.comp_views), s.vit.image_size
    micro = len(s.comp_views)
    ids = rng.integers(3, s.base_vocab, (micro, 2, t))
    ids[..., 0] = 1
    cmp, gen = np.zeros((micro, 2, t), bool), np.zeros((micro, 2, t), bool)
    for a, views in enumerate(s.comp_views):
        pos = 4
        for v in range(views):  # tiles <patch>..</patch>, then the global view <img>..</img>
            last = v == views - 1
            ids[a, 0, pos] = s.img_start if last else s.patch_start
            ids[a, 0, pos + 1:pos + 1 + n] = s.image_token + np.arange(n)
            cmp[a, 0, pos + 1:pos + 1 + n] = True
            ids[a, 0, pos + 1 + n] = s.img_end if last else s.patch_end
            pos += n + 2
        start = t // 2
        ids[a, 1, start] = s.img_start
        ids[a, 1, start + 1:start + 1 + n] = s.image_token + np.arange(n)
        gen[a, 1, start + 1:start + 1 + n] = True
        ids[a, 1, start + 1 + n] = s.img_end
    labels = np.where(cmp, -100, ids)
    cmp_valid = np.zeros((micro, 2, k), bool)
    for a, views in enumerate(s.comp_views):
        cmp_valid[a, 0, :views] = True
    f32 = np.float32
    return dict(input_ids=ids.astype(np.int32), labels=labels.astype(np.int32), ids_cmp_mask=cmp, ids_gen_mask=gen,
                cmp_pixels=rng.normal(size=(micro, 2, k, side, side, 3)).astype(f32),
                cmp_positions=rng.uniform(size=(micro, 2, k, 2)).astype(f32), cmp_valid=cmp_valid,
                gen_pixels=rng.normal(size=(micro, 2, 1, side, side, 3)).astype(f32),
                gen_valid=np.array([[[False], [True]]] * micro))


def _torch_micro(batch: dict, a: int) -> dict:
    """Micro-batch `a` as the official collator gives it: the real images only, concatenated in slot order."""
    valid, gvalid = batch["cmp_valid"][a], batch["gen_valid"][a]
    return dict(input_ids=torch.as_tensor(batch["input_ids"][a].astype(np.int64)),
                ids_cmp_mask=torch.as_tensor(batch["ids_cmp_mask"][a]),
                cmp_pixels=torch.as_tensor(batch["cmp_pixels"][a][valid]).permute(0, 3, 1, 2).contiguous(),
                cmp_positions=torch.as_tensor(batch["cmp_positions"][a][valid]),
                ids_gen_mask=torch.as_tensor(batch["ids_gen_mask"][a]),
                gen_pixels=torch.as_tensor(batch["gen_pixels"][a][gvalid]).permute(0, 3, 1, 2).contiguous(),
                labels=torch.as_tensor(batch["labels"][a].astype(np.int64)))


def _torch_loss(vit, agent, m: dict):
    """seed_x.py on one micro-batch: the ViT under no-grad, then the agent's total loss."""
    with torch.no_grad():
        cmp, tgt = vit(m["cmp_pixels"]), vit(m["gen_pixels"])
    return agent(m["input_ids"], m["ids_cmp_mask"], cmp, m["cmp_positions"], m["ids_gen_mask"], tgt, m["labels"])[-1]


def torch_step(vit, agent, batch: dict):
    """The official step (train_seed_x_sft.py): per micro-batch ViT (no grad) + agent loss / A, backward; clip
    1.0, AdamW, LR lambda. Returns a callable giving the mean loss."""
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=OPTIM.learning_rate, betas=(OPTIM.b1, OPTIM.b2), eps=OPTIM.eps,
                            weight_decay=OPTIM.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / OPTIM.warmup_steps))
    micro = [_torch_micro(batch, a) for a in range(batch["input_ids"].shape[0])]

    def run():
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m in micro:
            loss = _torch_loss(vit, agent, m)
            (loss / len(micro)).backward()
            total += float(loss.detach()) / len(micro)
        torch.nn.utils.clip_grad_norm_(params, OPTIM.max_grad_norm)
        opt.step()
        sched.step()
        return total

    return run


class OurStep:
    """Our SFT step (`make_train_step(mllm_loss)`), state kept between calls; `()` runs one step -> loss."""

    def __init__(self, vit, agent, batch: dict):
        tx = make_optimizer(OPTIM)
        self.graphdef, params, self.rest = split_trainable(MLLMTrainee(vit, agent),
                                                           trainable("sft_comp_gen", agent.config.llm.lora))
        self.state = init_state(params, tx, jax.random.PRNGKey(0))
        self.step = make_train_step(self.graphdef, mllm_loss, tx)
        self.batch = {k: jnp.asarray(v) for k, v in batch.items()}

    def __call__(self) -> float:
        self.state, metrics = self.step(self.state, self.rest, self.batch)
        return float(metrics["loss"])


def _agent_cfg(s: Sizes, remat: str = "none", dtype: str = "float32"):
    cfg = s.agent
    llm = cfg.llm.replace(lora=SFT_LORA, remat=remat, dtype=dtype)
    return cfg.replace(llm=llm, input_resampler=cfg.input_resampler.replace(dtype=dtype),
                       output_resampler=cfg.output_resampler.replace(dtype=dtype))


def train_rows(s: Sizes, pairs: int, remat_policy: str, only) -> list[Row]:
    """`forward` (the forward only, eval), `train`, `train_remat`: the SFT step both sides."""
    batch = sft_batch(s, np.random.default_rng(0))
    ref_vit, vit = torch_side.vit_pair(s.vit)
    ref, _ = torch_side.agent_pair(s.agent)
    ref = torch_side.add_lora(ref, SFT_LORA).train()
    rows, flops = [], None
    if "forward" in only:  # first: the torch LoRA factors are still peft's (B = 0), as ours
        rows.append(_forward_row(s, ref_vit, vit, ref, batch, pairs))
    for key, remat in (("train", "none"), ("train_remat", remat_policy)):
        if key not in only:
            continue
        _, agent = torch_side.agent_pair(_agent_cfg(s, remat))
        t_run, ours = torch_step(ref_vit, ref, batch), OurStep(vit, agent, batch)
        first = flops is None
        t_loss = t_run()  # the first step of both from the same weights (LoRA B = 0): the same loss
        if first:
            flops = torch_side.count_flops(t_run)  # model FLOPs: counted without checkpointing recompute
        if remat != "none":
            ref.llm.activation_checkpointing_enable({"use_reentrant": False})
        j_loss, j_first = first_call(ours)
        tm = interleave({"step": t_run}, {"step": ours}, pairs)
        ref.llm.activation_checkpointing_disable()
        check = f"first-step loss torch {t_loss:.5f} jax {j_loss:.5f}" if first else "same step as the row above"
        rows.append(Row(key, f"SFT train step, {'no remat' if remat == 'none' else f'remat {remat}'}",
                        tm.calls["torch:step"], tm.calls["jax:step"], compile_time(j_first, tm, "step"),
                        check, flops=flops, note="FLOPs: torch flop counter of the official step (no recompute)"))
    return rows


def _forward_row(s: Sizes, ref_vit, vit, ref, batch: dict, pairs: int) -> Row:
    _, agent = torch_side.agent_pair(_agent_cfg(s))
    graphdef, state = nnx.split(MLLMTrainee(vit, agent))
    loss_of = jax.jit(lambda st, b: jax.vmap(lambda m: mllm_loss(nnx.merge(graphdef, st), m, None)[0])(b))
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    micro = [_torch_micro(batch, a) for a in range(batch["input_ids"].shape[0])]
    ref.eval()

    def t_run():
        with torch.no_grad():
            return [_torch_loss(ref_vit, ref, m) for m in micro]

    want = np.array([float(x) for x in t_run()])
    got, first = first_call(lambda: np.asarray(loss_of(state, jbatch)))
    flops = torch_side.count_flops(t_run)
    tm = interleave({"fwd": t_run}, {"fwd": lambda: loss_of(state, jbatch).block_until_ready()}, pairs)
    ref.train()
    return Row("forward", "forward only (eval, ViT included)", tm.calls["torch:fwd"], tm.calls["jax:fwd"],
               compile_time(first, tm, "fwd"), f"loss max abs diff {np.abs(got - want).max():.1e}", flops=flops)


def vit_row(s: Sizes, pairs: int) -> Row:
    """The ViT alone on the step's 10 real images."""
    ref, ours = torch_side.vit_pair(s.vit)
    views = sum(s.comp_views) + len(s.comp_views)
    x = np.random.default_rng(1).normal(size=(views, s.vit.image_size, s.vit.image_size, 3)).astype(np.float32)
    graphdef, state = nnx.split(ours)
    forward = jax.jit(lambda st, v: nnx.merge(graphdef, st)(v))
    jx, tx = jnp.asarray(x), torch.as_tensor(x).permute(0, 3, 1, 2).contiguous()

    def t_run():
        with torch.no_grad():
            return ref(tx)

    got, first = first_call(lambda: np.asarray(forward(state, jx)))
    diff = float(np.abs(got - t_run().numpy()).max())
    tm = interleave({"vit": t_run}, {"vit": lambda: forward(state, jx).block_until_ready()}, pairs)
    return Row("vit", f"ViT alone ({views} views)", tm.calls["torch:vit"], tm.calls["jax:vit"],
               compile_time(first, tm, "vit"), f"max abs diff {diff:.1e}", flops=torch_side.count_flops(t_run))


def bf16_row(s: Sizes, pairs: int, curve_steps: int) -> Row:
    """Our bf16 step (fp32 master weights) against our fp32 step, and the two loss curves over `curve_steps`
    steps on the same batch. The ratio is fp32 time / bf16 time."""
    batch = sft_batch(s, np.random.default_rng(0))
    steps = {}
    for dtype in ("float32", "bfloat16"):
        _, vit = torch_side.vit_pair(s.vit.replace(dtype=dtype) if dtype != "float32" else s.vit)
        _, agent = torch_side.agent_pair(_agent_cfg(s, dtype=dtype))
        steps[dtype] = OurStep(vit, agent, batch)
    firsts = {dtype: first_call(step) for dtype, step in steps.items()}
    curves = {dtype: [firsts[dtype][0]] + [step() for _ in range(curve_steps - 1)] for dtype, step in steps.items()}
    rel = [abs(b - f) / abs(f) for f, b in zip(curves["float32"], curves["bfloat16"])]
    tm = interleave({"step": steps["float32"]}, {"step": steps["bfloat16"]}, pairs)
    return Row("bf16_train", "bf16 train step vs our fp32", tm.calls["torch:step"], tm.calls["jax:step"],
               compile_time(firsts["bfloat16"][1], tm, "step"), check=f"loss curves over {curve_steps} steps: max rel diff {max(rel):.2%}", left="jax fp32",
               extra=dict(loss_fp32=curves["float32"], loss_bf16=curves["bfloat16"], curve_max_rel_diff=max(rel)))

