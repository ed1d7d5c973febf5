"""Two JAX processes x 4 CPU devices (loopback, gloo): sharded creation and forward across processes."""
import pathlib
import sys

import numpy as np
import pytest
from flax import nnx

from seedx_jax.llama import LlamaConfig, LlamaForCausalLM
from seedx_jax.losses import next_token_loss
from processes import free_port, run_all

WORKER = pathlib.Path(__file__).with_name("mp_worker.py")


@pytest.mark.multiprocess
def test_two_process_sharded_loss_equals_single_process(tmp_path):
    port, out = free_port(), tmp_path / "loss.txt"
    run_all([[sys.executable, str(WORKER), str(port), str(i), str(out)] for i in range(2)], timeout=180)

    cfg = LlamaConfig.preset("llama_tiny_gqa")
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 16)).astype(np.int32)
    want = float(next_token_loss(LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))(ids).logits, ids))
    np.testing.assert_allclose(float(out.read_text()), want, rtol=1e-5)
