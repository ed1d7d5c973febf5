"""Tiny TFDS datasets built by the tests, without TensorFlow (the builders yield PNG / JPEG bytes):

* `SolidColours` (`solid_colours`): 6 image-caption pairs, each image one solid colour that its caption
  names; splits train (6) and test (2). Not registered: it is read back from its files alone, as a
  dataset whose builder code is not installed.
* `CocoCaptionsLike`: the features of TFDS's coco_captions (image, image/id, captions {text, id}) under
  its name and config `2014`, 3 examples in split train. TFDS's own coco_captions builder needs
  TensorFlow, so this is read back from its files too.
* `SolidQuestions` (`solid_questions`): 2 VQA records (image, question, answers) in split test, answered
  "car" by one annotator group and "bus" by the other, for `seedx-jax eval vqa --data tfds:...`.
"""
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from seedx_jax.agent.tokenizer import SeedXTokenizer, train_sentencepiece

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40),
           "purple": (140, 60, 180), "orange": (245, 130, 30)}


def solid_png(colour: str, size=(40, 32), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(buf, fmt)
    return buf.getvalue()


def caption(colour: str) -> str:
    return f"a picture all in {colour}"


class SolidColours(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "solid_colours"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="png"), "caption": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        names = list(COLOURS)
        return {"train": self._generate_examples(names), "test": self._generate_examples(names[:2])}

    def _generate_examples(self, colours):
        for i, colour in enumerate(colours):  # sizes differ: the images are not one array
            yield colour, {"image": solid_png(colour, (40 + 8 * i, 32)), "caption": caption(colour)}


class CocoCaptionsLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "coco_captions"
    VERSION = tfds.core.Version("1.1.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2014")]

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"), "image/id": np.int64,
            "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64})}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, colour in enumerate(["red", "green", "blue"]):
            captions = [{"text": caption(colour), "id": 2 * i}, {"text": "another caption", "id": 2 * i + 1}]
            yield i, {"image": solid_png(colour, fmt="JPEG"), "image/id": i, "captions": captions}


class SolidQuestions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = "solid_questions"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="png"), "question_id": np.int64,
            "question": tfds.features.Text(), "answers": tfds.features.Sequence(tfds.features.Text())}))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, answer in enumerate(["car", "bus"]):
            yield i, {"image": solid_png("red"), "question_id": i, "question": "What is it?", "answers": [answer] * 10}


def prepare(builder_cls, data_dir: str, **kwargs) -> str:
    builder = builder_cls(data_dir=data_dir, file_format="array_record", **kwargs)
    builder.download_and_prepare()
    return data_dir


def tokenizer_dir(directory: str) -> str:
    """A tiny SEED-X tokenizer (320 pieces + the 330 added tokens) that spells the captions."""
    sentences = [f"[INST] Generate an image: {caption(c)} [/INST] Here it is." for c in COLOURS] * 20
    tok = SeedXTokenizer(train_sentencepiece(f"{directory}/sp.model", sentences, 320))
    tok.save(f"{directory}/tokenizer")
    return f"{directory}/tokenizer"
