"""`python -m seedx_jax.train --config configs/<stage>.py --workdir DIR [--config.x=y ...]`.

Multi-host: `jax.distributed.initialize` runs when `--coordinator` / `--num_processes` /
`--process_id` (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) are set, or with
`--distributed=on` on TPU VMs and SLURM, where JAX finds them itself; `--distributed=off` never.
"""
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "a configs/<stage>.py file", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and samples go here; an existing run resumes")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"], "initialise jax.distributed (auto: when flags/env say)")
flags.DEFINE_string("coordinator", os.environ.get("JAX_COORDINATOR_ADDRESS"), "host:port of process 0")
flags.DEFINE_integer("num_processes", int(os.environ.get("JAX_NUM_PROCESSES", 0)) or None, "processes in the job")
flags.DEFINE_integer("process_id", int(os.environ["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in os.environ else None,
                     "this process's index")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _init_distributed() -> None:
    import jax

    explicit = FLAGS.coordinator or FLAGS.num_processes or FLAGS.process_id is not None
    if FLAGS.distributed == "off" or (FLAGS.distributed == "auto" and not explicit):
        return
    kwargs = {k: v for k, v in (("coordinator_address", FLAGS.coordinator), ("num_processes", FLAGS.num_processes),
                                ("process_id", FLAGS.process_id)) if v is not None}
    jax.distributed.initialize(**kwargs)


def main(argv) -> int:
    del argv
    if not FLAGS["verbosity"].present:  # JAX's INFO lines (backend probing) are noise in a training log
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    _init_distributed()
    from seedx_jax.data.pipeline import DataError
    from seedx_jax.train.build import TrainConfigError
    from seedx_jax.train.loop import train

    try:
        result = train(FLAGS.config, FLAGS.workdir)
    except (TrainConfigError, DataError, FloatingPointError) as err:
        print(f"seedx_jax.train: error: {err}", file=sys.stderr)
        return 2
    print(f"seedx_jax.train: {result.status} at step {result.step}; checkpoints in {FLAGS.workdir}/checkpoints",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
