"""The multi-host command-line flags shared by `python -m seedx_jax.train` and `seedx_jax.preflight`.

`jax.distributed.initialize` runs when `--coordinator` / `--num_processes` / `--process_id` (or
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) are set, or with `--distributed=on` on
TPU VMs and SLURM, where JAX finds them itself; `--distributed=off` never.
"""
import os

from absl import flags


def define_flags() -> None:
    flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                      "initialise jax.distributed (auto: when flags/env say)")
    flags.DEFINE_string("coordinator", os.environ.get("JAX_COORDINATOR_ADDRESS"), "host:port of process 0")
    flags.DEFINE_integer("num_processes", int(os.environ.get("JAX_NUM_PROCESSES", 0)) or None,
                         "processes in the job")
    flags.DEFINE_integer("process_id", int(os.environ["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in os.environ else None,
                         "this process's index")


def initialize(values=flags.FLAGS) -> bool:
    """`jax.distributed.initialize` as the flags say; True when it ran."""
    import jax

    explicit = values.coordinator or values.num_processes or values.process_id is not None
    if values.distributed == "off" or (values.distributed == "auto" and not explicit):
        return False
    kwargs = {k: v for k, v in (("coordinator_address", values.coordinator), ("num_processes", values.num_processes),
                                ("process_id", values.process_id)) if v is not None}
    jax.distributed.initialize(**kwargs)
    return True
