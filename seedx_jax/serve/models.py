"""Which pipelines `seedx-jax serve` serves, and loading them once, sharded over the host's devices.

Given `--checkpoint` / `--edit-checkpoint`, those. Without either, the models of the last `make demo`
(`demo_report/models/seedx_i` and `seedx_edit` under the working directory) when they are there, else
tiny random pipelines shaped like the demo's, written into the server's own folder, with a banner
saying they are untrained.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from jax.sharding import Mesh

from seedx_jax.checkpoint import CheckpointError
from seedx_jax.pipelines import SeedX
from seedx_jax.precision import Precision
from seedx_jax.progress import Progress
from seedx_jax.serve.service import RenderSettings

DEMO_MODELS = os.path.join("demo_report", "models")  # where `make demo` leaves its trained pipelines
# the demo's de-tokenizers draw 32 px scenes (configs/demo.py RESOLUTION) with its evaluation's sampler
DEMO_RENDER = RenderSettings(steps=20, guidance_scale=3.0, height=32, width=32)
DEMO_BANNER = ("Serving the shapes-world demo's models (`make demo`): a tiny SEED-X trained for minutes on a CPU. "
               "It only knows scenes of coloured shapes; see the README's demo section for what it can and cannot do.")
UNTRAINED_BANNER = ("UNTRAINED: no --checkpoint was given and no `make demo` models were found, so these are tiny "
                    "random pipelines. What they say and draw is noise; they show the app's flow, nothing more.")


class Choice(NamedTuple):
    chat: str | None  # SEED-X-I pipeline directory
    edit: str | None  # SEED-X-Edit pipeline directory
    banner: str | None
    defaults: RenderSettings


def choose(checkpoint: str | None, edit_checkpoint: str | None, own_folder: str) -> Choice:
    """The pipelines to serve (see the module doc); tiny random ones are written under `own_folder`."""
    if checkpoint or edit_checkpoint:
        return Choice(checkpoint, edit_checkpoint, None, RenderSettings())
    demo_i, demo_edit = (os.path.join(DEMO_MODELS, name) for name in ("seedx_i", "seedx_edit"))
    if os.path.isdir(demo_i):
        return Choice(demo_i, demo_edit if os.path.isdir(demo_edit) else None, DEMO_BANNER, DEMO_RENDER)
    from seedx_jax.notebook import write_tiny_pipelines

    chat, edit = write_tiny_pipelines(os.path.join(own_folder, "untrained"))
    return Choice(chat, edit, UNTRAINED_BANNER, DEMO_RENDER)


def open_pipelines(choice: Choice) -> tuple[SeedX | None, SeedX | None]:
    """Both pipelines opened without weights (manifests, configs, tokenizers: the cheap checks).

    Raises:
      CheckpointError: a path that is not a pipeline, or an edit pipeline without a stage-2 de-tokenizer.
    """
    chat = SeedX.open(choice.chat) if choice.chat else None
    edit = SeedX.open(choice.edit) if choice.edit else None
    if edit is not None and not (edit.configs.detokenizer and edit.configs.detokenizer.edits):
        raise CheckpointError(f"{choice.edit}: an edit checkpoint needs a stage-2 de-tokenizer (8-channel U-Net input)")
    return chat, edit


def load(choice: Choice, pipes: tuple[SeedX | None, SeedX | None], *, mesh: Mesh | None, precision: Precision,
         progress: Progress) -> None:
    """The weights of each opened pipeline, restored straight into their sharding over `mesh`."""
    for pipe, path in zip(pipes, (choice.chat, choice.edit)):
        if pipe is not None:
            with progress.stage(f"loading {path}"):
                pipe.load_weights(mesh=mesh, precision=precision)
