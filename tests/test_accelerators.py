"""Accelerator checks: `make test-gpu` / `make test-tpu` (deselected in the default CPU suite), and the
accelerator suite (bench/accel_suite.py): its smoke run and its FLOP count here, its full run on a GPU.

TPUs (and GPUs with TF32) run fp32 matmuls at reduced precision by default; parity with the
PyTorch reference needs `jax.default_matmul_precision("highest")`, as here.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seedx_jax.llama import LlamaConfig
from seedx_jax.lora import LoraConfig
from seedx_jax.train.metrics import compiled_flops
from parity import max_rel_diff
from torch_llama import hf_llama, jax_from_torch


def _require(platform: str):
    if jax.default_backend() != platform:
        pytest.skip(f"needs a {platform.upper()} (JAX backend is {jax.default_backend()})")


def _fp32_parity():
    cfg = LlamaConfig.preset("llama_tiny_gqa", num_hidden_layers=3)
    ref = hf_llama(cfg)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 33))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits
    with jax.default_matmul_precision("highest"):
        got = jax_from_torch(cfg, ref)(jnp.asarray(ids)).logits
    assert max_rel_diff(got, want) <= 1e-4


@pytest.mark.gpu
def test_gpu_fp32_parity_with_torch():
    _require("gpu")
    _fp32_parity()


@pytest.mark.gpu
def test_gpu_cudnn_attention_matches_xla_in_bf16():
    _require("gpu")
    # cuDNN flash attention needs head_dim multiple of 8 and bf16/fp16 inputs.
    cfg = LlamaConfig.preset("llama_tiny_gqa", hidden_size=256, num_attention_heads=4,
                             num_key_value_heads=2, dtype="bfloat16")
    ref = hf_llama(cfg)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 128)))
    xla = jax_from_torch(cfg, ref)(ids).logits.astype(jnp.float32)
    cudnn = jax_from_torch(cfg.replace(attention_impl="cudnn"), ref)(ids).logits.astype(jnp.float32)
    assert max_rel_diff(cudnn, xla) <= 2e-2


@pytest.mark.tpu
def test_tpu_fp32_parity_with_torch():
    _require("tpu")
    _fp32_parity()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "bench", "accel_suite.py")


def _run_suite(out, *flags, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, SUITE, "--out", str(out), *flags], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def _rows(summary: dict, part: str) -> list[dict]:
    return [r for r in summary["rows"] if r["part"] == part]


@pytest.mark.slow  # ~40-75 s on 2 cores: four part processes, each importing torch, transformers, diffusers
def test_accel_suite_smoke_run_measures_every_part_against_torch(tmp_path):
    """The whole suite at tiny shapes on the CPU (~50 s on 2 idle cores): every part writes its rows, and
    the PyTorch sides compute what ours do (fp32: equal greedy ids, equal sampled latents)."""
    # the parts' time limits are for idle GPU machines: ten times them here, where other work shares the cores
    summary = _run_suite(tmp_path / "accel.json", "--smoke", "--budget-scale", "10", timeout=900)
    assert not [p for p, d in summary["parts"].items() if d.get("error")]
    assert summary["device"]["platform"] == "cpu" and "CPU" in summary["torch"]["line"]
    assert [r["ours"] > 0 for r in _rows(summary, "ceilings")] == [True, True]
    train = _rows(summary, "train")
    assert [r["name"].rsplit(": ", 1)[1] for r in train] == ["MFU (6N)", "MFU (performed)"]
    assert train[0]["achieved"] > train[1]["achieved"] > 0  # same step time, 6N counts more FLOPs
    decode, sdxl = _rows(summary, "decode"), _rows(summary, "sdxl")
    assert len(decode) == len(sdxl) == 1 and decode[0]["ceiling"] == "bandwidth"
    for row in decode + sdxl:
        assert row["torch"] > 0 and row["ratio"] == pytest.approx(row["ours"] / row["torch"])
    ids = summary["parts"]["decode"]["details"]["batch_2"]["greedy_ids"]
    assert ids["equal"] == ids["total"] > 0
    assert summary["parts"]["sdxl"]["details"]["latents_relative_l2"] <= 1e-3


def test_performed_flops_match_xla_count_of_an_unrolled_lora_step():
    """The suite's `performed` FLOPs of a LoRA step = XLA's count of the compiled trainer step, up to the
    elementwise work (softmax, norms, AdamW) that XLA adds; the 6N convention counts frozen weight
    gradients the step never computes. Unrolled layers: XLA counts a scanned stack's body once."""
    sys.path.insert(0, os.path.dirname(SUITE))
    from accel_train import build_step, step_flops

    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                      num_attention_heads=4, scan_layers=False, remat="none", max_position_embeddings=128,
                      lora=LoraConfig(rank=8))
    compiled = build_step(cfg, 2, 128)[0]
    xla, ours = compiled_flops(compiled), step_flops(cfg, 2, 128)
    assert 0.98 <= xla / ours["performed"] <= 1.12
    assert xla / ours["6N"] < 0.85


@pytest.mark.gpu
def test_gpu_accel_suite_runs_within_its_budget(tmp_path):
    """The full suite on one GPU (bench/accel_suite.py; < 8 minutes on an H100 / H200)."""
    _require("gpu")
    summary = _run_suite(tmp_path / "accel.json", timeout=540)
    assert not [p for p, d in summary["parts"].items() if d.get("error")]
    assert summary["peaks"]["bf16_flops"] and summary["peaks"]["bandwidth"], summary["device"]
    for row in _rows(summary, "train") + _rows(summary, "decode"):
        assert 0 < row["of_peak"] <= 1.0, row
    assert _rows(summary, "sdxl")[0]["ours"] > 0
