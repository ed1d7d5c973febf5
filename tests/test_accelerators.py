"""Accelerator checks: `make test-gpu` / `make test-tpu` (deselected in the default CPU suite).

TPUs (and GPUs with TF32) run fp32 matmuls at reduced precision by default; parity with the
PyTorch reference needs `jax.default_matmul_precision("highest")`, as here.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seedx_jax.llama import LlamaConfig
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
