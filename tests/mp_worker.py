"""One process of tests/test_multiprocess.py: argv = port, process_id, output file."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from seedx_jax import sharding  # noqa: E402
from seedx_jax.llama import LlamaConfig, LlamaForCausalLM  # noqa: E402
from seedx_jax.losses import next_token_loss  # noqa: E402


def main(port: str, process_id: str, out: str) -> None:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=int(process_id))
    assert jax.device_count() == 8 and jax.local_device_count() == 4
    cfg = LlamaConfig.preset("llama_tiny_gqa")
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = sharding.create_sharded(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)), mesh)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 16)).astype(np.int32)
    spec = sharding.logical_to_spec(("batch", "seq"), mesh=mesh, shape=ids.shape)
    # each process feeds the rows its devices own
    rows = 8 // jax.process_count()
    local = ids[jax.process_index() * rows:(jax.process_index() + 1) * rows]
    batch = jax.make_array_from_process_local_data(jax.sharding.NamedSharding(mesh, spec), local, ids.shape)
    graphdef, state = nnx.split(model)
    with jax.set_mesh(mesh):
        loss = jax.jit(lambda s, i: next_token_loss(nnx.merge(graphdef, s)(i).logits, i))(state, batch)
    if jax.process_index() == 0:
        with open(out, "w") as f:
            f.write(repr(float(loss)))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
