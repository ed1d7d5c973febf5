"""The train step against PyTorch: peft LoRA Llama + torch AdamW + LambdaLR (SEED-X's schedule) +
clip_grad_norm_ + gradient accumulation, 3 optimizer steps from the same weights and batches.

Tolerance: every trainable parameter max |diff| <= 1e-4 x max |param| after 3 steps; frozen
parameters bit-identical.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seedx_jax.llama import LlamaConfig
from seedx_jax.lora import trainable_filter
from seedx_jax.losses import next_token_loss
from seedx_jax.train.optim import OptimConfig, lr_factor, make_optimizer
from seedx_jax.train.step import init_state, make_train_step, split_trainable
from parity import max_rel_diff
from test_lora import LORA, _flat, _lookup, _target, peft_model
from torch_llama import jax_from_torch

CFG = LlamaConfig.preset("llama_tiny_gqa", lora=LORA)
OPT = OptimConfig(learning_rate=1e-2, warmup_steps=2, total_steps=10, max_grad_norm=0.5)
A, MICRO, T = 2, 2, 13


def seedx_lambda(step):  # src/train/schedular.py (docs/training_recipe.md)
    if step < OPT.warmup_steps:
        return step / OPT.warmup_steps
    p = (step - OPT.warmup_steps) / (OPT.total_steps - OPT.warmup_steps)
    return max(0.0, 0.5 * ((1 + OPT.min_lr_ratio) + (1 - OPT.min_lr_ratio) * math.cos(math.pi * p)))


def test_schedule_points():
    f = lr_factor(OptimConfig())  # warmup 500, decay to 0.05 at 20000
    got = [float(f(s)) for s in (0, 250, 500, 10250, 20000, 30000)]
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.525, 0.05, 0.05], atol=1e-6)


def batches(n, micro=MICRO):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CFG.vocab_size, (n, A, micro, T))
    labels = ids.copy()
    labels[..., :4] = -100
    return ids, labels


def jax_loss(model, batch, rng):
    ids, labels = batch
    return next_token_loss(model(ids).logits, labels), {}


@pytest.fixture(scope="module")
def trained():
    ref = peft_model(CFG)
    ours = jax_from_torch(CFG, ref, strict=True)
    graphdef, params, rest = split_trainable(ours, trainable_filter(CFG.lora))
    frozen_before = jax.tree.map(np.asarray, rest)
    step = make_train_step(graphdef, jax_loss, make_optimizer(OPT))
    state = init_state(params, make_optimizer(OPT), jax.random.key(0))
    ids, labels = batches(3)
    metrics = []
    for s in range(3):
        state, m = step(state, rest, (jnp.asarray(ids[s]), jnp.asarray(labels[s])))
        metrics.append(jax.tree.map(float, m))
    trainable = [p for p in ref.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=OPT.learning_rate, betas=(OPT.b1, OPT.b2), eps=OPT.eps,
                            weight_decay=OPT.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, seedx_lambda)
    torch_norms = []
    for s in range(3):
        opt.zero_grad()
        for a in range(A):
            logits = ref(torch.tensor(ids[s, a])).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, CFG.vocab_size),
                                   torch.tensor(labels[s, a, :, 1:]).reshape(-1), ignore_index=-100)
            (loss / A).backward()
        torch_norms.append(float(torch.nn.utils.clip_grad_norm_(trainable, OPT.max_grad_norm)))
        opt.step()
        sched.step()
    return ref, state, rest, frozen_before, metrics, torch_norms


def test_three_steps_match_torch_adamw(trained):
    ref, state, _, _, metrics, torch_norms = trained
    assert int(state.step) == 3 and int(state.nonfinite) == 0
    np.testing.assert_allclose([m["grad_norm"] for m in metrics], torch_norms, rtol=1e-4)
    assert min(torch_norms) > OPT.max_grad_norm  # clipping was active
    flat = _flat(state.params)
    checked = 0
    for name, p in ref.named_parameters():
        if not p.requires_grad:
            continue
        path, transposed = _target(name)
        want = p.detach().numpy().T if transposed else p.detach().numpy()
        assert max_rel_diff(_lookup(flat, path), want) <= 1e-4, name
        checked += 1
    assert checked == sum(1 for p in ref.parameters() if p.requires_grad)


def test_frozen_parameters_are_untouched(trained):
    _, _, rest, frozen_before, _, _ = trained
    for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(jax.tree.map(np.asarray, rest))):
        np.testing.assert_array_equal(a, b)


def test_nonfinite_step_is_skipped_and_counted():
    ours = jax_from_torch(CFG, peft_model(CFG), strict=True)
    graphdef, params, rest = split_trainable(ours, trainable_filter(CFG.lora))

    def loss(model, batch, rng):
        value, aux = jax_loss(model, batch[:2], rng)
        return value * batch[2], aux  # batch[2] = nan poisons the loss and every gradient

    step = make_train_step(graphdef, loss, make_optimizer(OPT))
    before = jax.tree.map(np.asarray, params)
    state = init_state(params, make_optimizer(OPT), jax.random.key(0))
    ids, labels = (jnp.asarray(x[0]) for x in batches(1))
    state, m = step(state, rest, (ids, labels, jnp.full((A,), jnp.nan)))
    assert m["finite"] == 0.0 and int(state.nonfinite) == 1 and int(state.step) == 0
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.tree.map(np.asarray, state.params))):
        np.testing.assert_array_equal(a, b)
    state, m = step(state, rest, (ids, labels, jnp.ones((A,))))
    assert m["finite"] == 1.0 and int(state.step) == 1 and int(state.nonfinite) == 1


def test_eight_devices_follow_the_one_device_trajectory():
    from seedx_jax.sharding import make_mesh
    from seedx_jax.train.step import batch_shardings, state_shardings
    ref = peft_model(CFG)
    ids, labels = batches(3, micro=4)  # the batch axis spans data x fsdp = 4 devices
    runs = []
    for n, mesh_cfg in ((1, {}), (8, {"data": 2, "fsdp": 2, "tensor": 2})):
        mesh = make_mesh(mesh_cfg, jax.devices()[:n])
        ours = jax_from_torch(CFG, ref, strict=True)
        graphdef, params, rest = split_trainable(ours, trainable_filter(CFG.lora))
        tx = make_optimizer(OPT)
        state = init_state(params, tx, jax.random.key(0))
        state_sh, rest_sh = state_shardings(state, rest, tx, mesh)
        batch_sh = batch_shardings((ids[0], labels[0]), mesh)
        state, rest = jax.device_put(state, state_sh), jax.device_put(rest, rest_sh)
        step = make_train_step(graphdef, jax_loss, tx, shardings=(state_sh, rest_sh), batch_sharding=batch_sh)
        losses = []
        with jax.set_mesh(mesh):
            for s in range(3):
                batch = jax.device_put((jnp.asarray(ids[s]), jnp.asarray(labels[s])), batch_sh)
                state, m = step(state, rest, batch)
                losses.append(float(m["loss"]))
        kernel = state.params["layers"]["self_attn"]["q_proj"]["lora_a"][...]
        assert len(kernel.sharding.device_set) == n
        runs.append((losses, jax.tree.map(np.asarray, state.params)))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(runs[0][1]), jax.tree.leaves(runs[1][1])):
        assert max_rel_diff(b, a) <= 1e-4
