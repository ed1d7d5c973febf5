"""`python -m seedx_jax.train --config configs/<stage>.py --workdir DIR [--config.x=y ...]`.

Multi-host flags: `seedx_jax.train.distributed`. Run `python -m seedx_jax.preflight` with the same
config on the target first: it checks the mesh, the batch split and the memory before a long compile.
"""
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from seedx_jax.train import distributed

config_flags.DEFINE_config_file("config", None, "a configs/<stage>.py file", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and samples go here; an existing run resumes")
distributed.define_flags()
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv) -> int:
    del argv
    if not FLAGS["verbosity"].present:  # JAX's INFO lines (backend probing) are noise in a training log
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    distributed.initialize(FLAGS)
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
