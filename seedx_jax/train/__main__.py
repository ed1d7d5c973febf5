"""`python -m seedx_jax.train --config CONFIG --workdir DIR [--config.x=y ...]`.

CONFIG: the name of a shipped config, from any working directory (`sft_edit`, `sft_edit:tiny`,
`demo:detok_stage1`; `seedx_jax.train.config_files`), or a config file of your own (`mine.py:tiny`,
relative to the working directory); every field, nested ones too, can be overridden
(`--config.model.agent.llm.remat=full`).

Multi-host flags: `seedx_jax.train.distributed`. Run `python -m seedx_jax.preflight` with the same
config on the target first: it checks the mesh, the batch split and the memory before a long compile.

Exit status: 0 done (or preempted by SIGTERM, with a checkpoint to resume from); 130 Ctrl-C, which
stops after the current step with a checkpoint (a second Ctrl-C stops at once); 2 a bad setting or
input, one line naming it; 1 the run diverged (too many non-finite steps), one line, checkpoint saved.
"""
import logging
import signal
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from seedx_jax.exits import error_line
from seedx_jax.train import distributed
from seedx_jax.train.config_files import parse_flags
from seedx_jax.train.stop import StopSignal

config_flags.DEFINE_config_file("config", None, "a config file, or a shipped config's name (sft_edit:tiny)",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and samples go here; an existing run resumes")
distributed.define_flags()
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS
INTERRUPTED = 128 + signal.SIGINT  # as shells report a Ctrl-C
# SIGTERM and Ctrl-C, from the start: loading the config imports JAX, which loses an exception raised
# by a Ctrl-C at that point in a garbage-collector callback
STOP = StopSignal(exit_on_second_interrupt=True)


def main(argv) -> int:
    del argv
    if not FLAGS["verbosity"].present:  # JAX's INFO lines (backend probing) are noise in a training log
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    distributed.initialize(FLAGS)
    from seedx_jax.data.pipeline import DataError
    from seedx_jax.train.build import TrainConfigError
    from seedx_jax.train.loop import train
    from seedx_jax.train.workdir import WorkdirError

    try:
        result = train(FLAGS.config, FLAGS.workdir, stop=STOP)
    except (TrainConfigError, WorkdirError, DataError) as err:
        print(f"seedx_jax.train: error: {error_line(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # the run diverged: not bad input
        print(f"seedx_jax.train: error: {error_line(err)}", file=sys.stderr)
        return 1
    checkpoints = f"{FLAGS.workdir.rstrip('/')}/checkpoints"
    if result.status != "interrupted":
        print(f"seedx_jax.train: {result.status} at step {result.step}; checkpoints in {checkpoints}", file=sys.stderr)
        return 0
    if result.step > result.start:
        print(f"seedx_jax.train: interrupted (Ctrl-C) at step {result.step}; checkpoint saved in {checkpoints}; "
              "rerun the same command to resume", file=sys.stderr)
    else:
        print("seedx_jax.train: interrupted (Ctrl-C) before the first step of this run; nothing saved"
              + (f"; rerun the same command to resume from step {result.start}" if result.start else ""),
              file=sys.stderr)
    return INTERRUPTED


if __name__ == "__main__":
    with STOP:
        app.run(main, flags_parser=parse_flags("seedx_jax.train"))
