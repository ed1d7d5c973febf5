"""The shapes world as a TensorFlow Datasets builder, `shapes_world` (docs/tfds.md).

One example per scene of the world (`seedx_jax.demo.dataset.scene_example`, the same scenes as
`write_split` for the same seed and split), features:

    image         Image (PNG, any size): the comprehension scene
    drawn_image   Image (PNG, square): the scene of the caption and the edit's source
    target_image  Image (PNG, square): the edit's target; the drawn scene when the scene has no edit
    record        Text: the scene's `scenes.jsonl` row as JSON (index, scene, questions, grounding,
                  drawn, caption, edit)

Splits train and test, in scene order (example i of a split is scene i), stored as ArrayRecord, so
`tfds.data_source("shapes_world", split=..., data_dir=...)` reads it once this module is imported.
The builder yields encoded PNG bytes: TFDS encodes numpy images with TensorFlow, which it does not
need for bytes, so this dataset prepares without TensorFlow.

    python -m seedx_jax.demo.tfds_builder --data_dir DIR [--seed N] [--train-scenes N] [--test-scenes N]
"""
from __future__ import annotations

import json
import sys

import tensorflow_datasets as tfds
from etils import epath

from seedx_jax.demo.dataset import scene_example
from seedx_jax.exits import ArgumentParser, describe, error_line, exit_code, interrupts_as_exceptions
from seedx_jax.paths import argument, resolve

NAME = "shapes_world"
DEFAULTS = {"seed": 0, "train_scenes": 3000, "test_scenes": 100}  # the demo's full run
MAX_SCENES = 1_000_000


class ShapesWorld(tfds.core.GeneratorBasedBuilder):
    """`ShapesWorld(seed=0, train_scenes=3000, test_scenes=100, data_dir=..., ...)`; the seed and the
    scene counts are saved in the prepared dataset's metadata (`info.metadata`)."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Scenes of seedx_jax.demo.dataset, one example per scene."}
    # TFDS finds the code of a builder in a package through `importlib_resources`, which it requires only
    # on Python < 3.9 (tensorflow-datasets 4.9.10 metadata): without that package preparing fails
    code_path = epath.Path(__file__)

    def __init__(self, *, seed: int = DEFAULTS["seed"], train_scenes: int = DEFAULTS["train_scenes"],
                 test_scenes: int = DEFAULTS["test_scenes"], file_format: str = "array_record", **kwargs):
        self.seed, self.scenes = seed, {"train": train_scenes, "test": test_scenes}
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        png = tfds.features.Image(encoding_format="png")
        return tfds.core.DatasetInfo(
            builder=self,
            description="Seeded scenes of flat coloured shapes (seedx_jax.demo.world) with questions, grounding, "
                        "a caption and an edit per scene.",
            features=tfds.features.FeaturesDict({"image": png, "drawn_image": png, "target_image": png,
                                                 "record": tfds.features.Text()}),
            metadata=tfds.core.MetadataDict(seed=self.seed, **{f"{s}_scenes": n for s, n in self.scenes.items()}),
            disable_shuffling=True,  # example i of a split is scene i, as in scenes.jsonl
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, n) for split, n in self.scenes.items()}

    def _generate_examples(self, split: str, scenes: int):
        for i in range(scenes):
            example = scene_example(self.seed, split, i)
            yield i, {"image": example.image, "drawn_image": example.drawn,
                      "target_image": example.drawn if example.target is None else example.target,
                      "record": json.dumps(example.row)}


def prepare(data_dir: str, *, seed: int = DEFAULTS["seed"], train_scenes: int = DEFAULTS["train_scenes"],
            test_scenes: int = DEFAULTS["test_scenes"]) -> tfds.core.DatasetBuilder:
    """Prepares shapes_world in `data_dir` (relative to the working directory, `~` expanded); a
    dataset already prepared there with the same settings is kept.

    Raises:
      ValueError: `data_dir` already holds shapes_world prepared with other settings (one line, naming
        the folder to delete).
    """
    builder = ShapesWorld(seed=seed, train_scenes=train_scenes, test_scenes=test_scenes, data_dir=resolve(data_dir))
    if builder.is_prepared():
        wanted = {"seed": seed, "train_scenes": train_scenes, "test_scenes": test_scenes}
        found = {k: builder.info.metadata.get(k) for k in wanted}
        if found != wanted:
            raise ValueError(f"{builder.data_dir} holds {NAME} prepared with {_settings(found)}, not "
                             f"{_settings(wanted)}; delete that folder or choose another --data_dir")
    builder.download_and_prepare()
    return builder


def _settings(values: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in values.items())


def main(argv=None) -> int:
    prog = "python -m seedx_jax.demo.tfds_builder"
    parser = ArgumentParser(prog=prog, description="Prepares the shapes_world TFDS dataset (ArrayRecord).")
    parser.add_argument("--data_dir", required=True, type=argument, help="TFDS data folder to prepare it in")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="world seed, in [0, 2**31)")
    for split in ("train", "test"):
        parser.add_argument(f"--{split}-scenes", type=int, default=DEFAULTS[f"{split}_scenes"],
                            help=f"scenes in the {split} split (default {DEFAULTS[f'{split}_scenes']})")
    args = parser.parse_args(argv)
    if not 0 <= args.seed < 2 ** 31:
        parser.error(f"--seed {args.seed} must be in [0, 2**31)")
    for split in ("train", "test"):
        value = getattr(args, f"{split}_scenes")
        if not 1 <= value <= MAX_SCENES:
            parser.error(f"--{split}-scenes {value} must be in [1, {MAX_SCENES}]")
    print(f"{prog}: preparing {NAME} (seed {args.seed}: {args.train_scenes} train, {args.test_scenes} test "
          f"scenes) in {args.data_dir}", file=sys.stderr)
    try:
        with interrupts_as_exceptions():
            builder = prepare(args.data_dir, seed=args.seed, train_scenes=args.train_scenes,
                              test_scenes=args.test_scenes)
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # TFDS writes into an `incomplete.*` folder, renamed when done
        print(f"\n{prog}: {describe(err)}; nothing was prepared", file=sys.stderr)
        return exit_code(err)
    print(f"{prog}: {NAME} {builder.version} is in {builder.data_dir}; train with format='tfds', "
          f"paths='{NAME}:train', data_dir='{args.data_dir}'", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
