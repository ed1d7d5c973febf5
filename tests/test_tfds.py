"""TensorFlow Datasets as a data source (issue 22): tiny datasets built here by TFDS builders (no
TensorFlow: the builders yield encoded images) are read back from their files by `open_tfds`, become
training records through `TfdsReader` and batches through the trainer's own data path; the shapes
world's builder gives the scenes `write_split` writes; every error is one line naming the dataset.
"""
import io
import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_fixtures as F
from configs import train_common as tc
from seedx_jax.data.examples import ExampleBuilder, ExampleSpec, Skip
from seedx_jax.data.formats import ArrayRecordReader, RawRecord, open_source
from seedx_jax.data.tfds_source import DATASET_LAYOUTS, TfdsError, TfdsReader, open_tfds, parse_tfds_spec
from seedx_jax.demo import tfds_builder
from seedx_jax.demo.dataset import FILES, scene_from_record, write_split
from seedx_jax.demo.world import render
from seedx_jax.vision.anyres import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """solid_colours and the coco_captions look-alike, prepared in one TFDS data folder."""
    where = str(tmp_path_factory.mktemp("tfds"))
    F.prepare(F.SolidColours, where)
    F.prepare(F.CocoCaptionsLike, where)
    return where


def colour_of(text: str) -> str:
    named = [c for c in F.COLOURS if c in text]
    assert len(named) == 1, text
    return named[0]


def test_tfds_specs():
    assert parse_tfds_spec("coco_captions:train") == ("coco_captions", "train")
    assert parse_tfds_spec(" shapes_world:test[:10] ") == ("shapes_world", "test[:10]")
    assert parse_tfds_spec("coco_captions/2014:1.1.0:train[10%:]+val") == ("coco_captions/2014:1.1.0",
                                                                          "train[10%:]+val")
    for bad in ("coco_captions", "coco_captions:", ":train", "coco captions:train", "coco_captions:[:10]"):
        with pytest.raises(ValueError) as err:
            parse_tfds_spec(bad)
        assert repr(bad) in str(err.value) and "NAME[/CONFIG][:VERSION]:SPLIT" in str(err.value)


def test_a_prepared_dataset_opens_without_its_builder_code(data_dir, tmp_path, monkeypatch):
    source = open_tfds("solid_colours", "train", data_dir)  # SolidColours is not registered with TFDS
    assert len(source) == 6
    for i in range(6):
        example = source[i]
        colour = colour_of(example["caption"].decode())
        assert example["image"].shape[0] == 32 and example["image"].dtype == np.uint8
        assert example["image"].reshape(-1, 3).mean(0).tolist() == list(F.COLOURS[colour])
    encoded = open_tfds("solid_colours", "train", data_dir, decode_images=False)
    sizes = {c: (40 + 8 * i, 32) for i, c in enumerate(F.COLOURS)}  # as SolidColours draws them
    for i in range(6):
        colour = colour_of(encoded[i]["caption"].decode())
        assert encoded[i]["image"] == F.solid_png(colour, sizes[colour])  # the stored PNG, byte for byte
    assert len(open_tfds("solid_colours:1.0.0", "train[:4]", data_dir)) == 4
    assert len(open_tfds("coco_captions/2014", "train", data_dir)) == 3
    # the data folder as users give it (relative, ~), and TFDS's default ($TFDS_DATA_DIR)
    monkeypatch.chdir(os.path.dirname(data_dir))
    assert len(open_tfds("solid_colours", "test", os.path.basename(data_dir))) == 2
    monkeypatch.setenv("HOME", os.path.dirname(data_dir))
    assert len(open_tfds("solid_colours", "test", "~/" + os.path.basename(data_dir))) == 2
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    assert len(open_tfds("solid_colours", "test")) == 2


def test_coco_captions_records(data_dir):
    """TFDS's coco_captions builder needs TensorFlow to be constructed; its prepared files do not."""
    reader = TfdsReader("coco_captions", "train", data_dir, "caption")
    assert len(reader) == 3
    for i in range(3):
        record = reader[i]
        assert record.kind == "caption" and record.location == f"tfds:coco_captions:train#{i}"
        image = Image.open(io.BytesIO(record.images["image"]))
        assert image.format == "JPEG"  # the stored bytes, not decoded and re-encoded
        colour = colour_of(record.fields["caption"])
        assert record.fields["caption"] == F.caption(colour)  # the first caption of the example
        assert np.abs(np.asarray(image, np.float32).reshape(-1, 3).mean(0) - F.COLOURS[colour]).max() < 3
    with pytest.raises(TfdsError) as err:
        TfdsReader("coco_captions", "train", data_dir, "vqa")
    assert str(err.value) == ("TFDS dataset 'coco_captions' gives caption records, for the tasks t2i, detok_image; "
                              "not vqa records")


def _unnormalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels * CLIP_STD + CLIP_MEAN) * 255


def test_training_batches_hold_the_dataset_images(data_dir, tmp_path):
    """pretrain:tiny's data path (build_data) on `format="tfds"`: every row's caption names the colour of
    the image in that row."""
    from configs import pretrain
    from seedx_jax.agent.tokenizer import SeedXTokenizer
    from seedx_jax.train.build import build_data, model_configs

    config = pretrain.get_config("tiny")
    config.tokenizer = F.tokenizer_dir(str(tmp_path))
    config.data.sources = {"colours": tc.source("tfds", "t2i", micro_batch=2, max_length=224, grids=tc.EDIT_GRIDS,
                                                paths="solid_colours:train", data_dir=data_dir)}
    tok = SeedXTokenizer.from_dir(config.tokenizer)
    mixture = build_data(config, tok, model_configs(config)["vit"].image_size)
    seen = []
    for step in range(3):
        name, batch = mixture.batch_for(step)
        assert name == "colours"
        rows = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}  # [accumulation x micro, ...]
        for r in range(len(rows["input_ids"])):
            text = tok.decode(rows["input_ids"][r][rows["attention_mask"][r] > 0].tolist())
            # generation: the image is the target; the captioning fallback: the comprehension view
            pixels = rows["gen_pixels"][r, 0] if rows["gen_valid"][r, 0] else rows["cmp_pixels"][r, -1]
            colour = colour_of(text)
            np.testing.assert_allclose(_unnormalise(pixels).reshape(-1, 3).mean(0), F.COLOURS[colour], atol=1.0)
            seen.append(colour)
    assert set(seen) == set(F.COLOURS) and mixture.stats()["colours"].skipped == 0  # 12 rows: 2 epochs of 6


@pytest.mark.slow  # ~15-20 s on 2 cores, compiling the tiny model; the data path above is the fast check
def test_training_steps_on_a_tfds_source(data_dir, tmp_path):
    from configs import pretrain
    from seedx_jax.train.loop import train

    config = pretrain.get_config("tiny")
    config.tokenizer = F.tokenizer_dir(str(tmp_path))
    config.data.sources = {"colours": tc.source("tfds", "t2i", micro_batch=2, max_length=224, grids=tc.EDIT_GRIDS,
                                                paths="solid_colours:train", data_dir=data_dir)}
    config.train.update(steps=2, accumulation=1, log_every=1, checkpoint_every=1000)
    config.mesh.num_devices = 1
    result = train(config, str(tmp_path / "run"), log_stream=open(os.devnull, "w"))
    assert result.status == "done" and result.step == 2 and np.isfinite([h["loss/loss"] for h in result.history]).all()
    record = json.loads((tmp_path / "run" / "checkpoints" / "2" / "record" / "metadata").read_text())
    assert record["sources"] == {"colours": {"examples": 4, "skipped": 0}}  # 2 steps x 2 rows, all read


def test_shapes_world_builder_gives_the_scenes_of_write_split(tmp_path, capsys):
    where = str(tmp_path / "tfds")
    argv = ["--data_dir", where, "--seed", "5", "--train-scenes", "3", "--test-scenes", "2"]
    assert tfds_builder.main(argv) == 0
    assert "train with format='tfds', paths='shapes_world:train'" in capsys.readouterr().err
    for split, scenes in (("train", 3), ("test", 2)):
        out = tmp_path / split
        write_split(str(out), seed=5, split=split, scenes=scenes)
        lines = (out / "scenes.jsonl").read_text().splitlines()
        source = tfds.data_source("shapes_world", split=split, data_dir=where)  # registered by the import
        assert len(source) == scenes
        for i, line in enumerate(lines):
            example = source[i]
            assert example["record"].decode() == line  # scene i is example i
            row = json.loads(line)
            drawn = np.asarray(render(scene_from_record(row["drawn"])))
            target = np.asarray(render(scene_from_record(row["edit"]["target"]))) if row["edit"] else drawn
            np.testing.assert_array_equal(example["image"], np.asarray(render(scene_from_record(row["scene"]))))
            np.testing.assert_array_equal(example["drawn_image"], drawn)
            np.testing.assert_array_equal(example["target_image"], target)
        for kind, name in FILES.items():  # the training records of both paths are the same
            written, read = ArrayRecordReader([str(out / name)]), TfdsReader("shapes_world", split, where, kind)
            expected = [(r.fields, r.images) for r in (written[j] for j in range(len(written)))]
            assert [(r.fields, r.images) for r in (read[j] for j in range(len(read)))] == expected, kind


def test_a_scene_without_an_edit_is_a_skipped_edit_record():
    """Our world almost always finds an edit; the record of a scene without one says so."""
    row = {"questions": ["q", "a"], "grounding": None, "caption": "c", "edit": None}
    fields, images = DATASET_LAYOUTS["shapes_world"].read({"record": json.dumps(row).encode()}, "edit")
    assert (fields, images) == ({"error": "scene has no edit"}, {})
    skip = ExampleBuilder(ExampleSpec("detok_edit"), None)(RawRecord("edit", "tfds:shapes_world:test#4", fields,
                                                                     images), 0)
    assert skip == Skip("tfds:shapes_world:test#4", "scene has no edit")


def test_shapes_world_command_errors(tmp_path, capsys):
    where = str(tmp_path / "tfds")
    with pytest.raises(SystemExit) as exit_:
        tfds_builder.main(["--data_dir", where, "--train-scenes", "0"])
    assert exit_.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert tfds_builder.main(["--data_dir", where, "--train-scenes", "1", "--test-scenes", "1"]) == 0
    capsys.readouterr()
    assert tfds_builder.main(["--data_dir", where, "--seed", "1", "--train-scenes", "1", "--test-scenes", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "prepared with seed 0, train scenes 1, test scenes 1, not seed 1" in err and "--data_dir" in err


def one_line(call) -> str:
    with pytest.raises(TfdsError) as err:
        call()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_errors_are_one_line_naming_the_dataset(data_dir, tmp_path, monkeypatch):
    empty = str(tmp_path / "empty")
    message = one_line(lambda: open_tfds("solid_colours", "train", empty))
    assert message == (f"TFDS dataset 'solid_colours' is not prepared in {empty}: run `tfds build solid_colours "
                       f"--data_dir {empty} --file_format array_record` on a machine with TensorFlow")
    message = one_line(lambda: open_tfds("shapes_world", "train", empty))
    assert message.endswith(f"not prepared in {empty}: python -m seedx_jax.demo.tfds_builder --data_dir {empty}")
    message = one_line(lambda: open_tfds("solid_colours:2.0.0", "train", data_dir))
    assert f"not prepared in {data_dir} (its folder {data_dir}/solid_colours holds 1.0.0)" in message
    message = one_line(lambda: open_tfds("solid_colours", "validation", data_dir))
    assert message.startswith("TFDS dataset 'solid_colours' in ") and "split 'validation'" in message
    assert "its splits are train, test" in message or "its splits are test, train" in message
    assert "Unknown split 'validation'" in message
    assert "TFDS dataset 'a b'" in one_line(lambda: open_tfds("a b", "train", data_dir))
    assert "gives caption records" in one_line(lambda: TfdsReader("solid_colours", "train", data_dir, "edit"))

    # prepared by TensorFlow as tfrecord (simulated: the same files, recorded as tfrecord)
    tfrecord = tmp_path / "tfrecord"
    shutil.copytree(data_dir, tfrecord)
    info_path = tfrecord / "solid_colours" / "1.0.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    message = one_line(lambda: open_tfds("solid_colours", "train", str(tfrecord)))
    assert "'solid_colours'" in message and "prepared as tfrecord, which only TensorFlow reads" in message
    assert "--file_format array_record" in message

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if not installed
    assert one_line(lambda: open_tfds("coco_captions", "train", data_dir)) == (
        "TFDS dataset 'coco_captions': tensorflow-datasets is not installed; pip install seedx_jax[data]")


def test_a_training_config_names_a_bad_tfds_source(data_dir, tmp_path):
    from configs import detok_stage1
    from seedx_jax.train.build import TrainConfigError, build_data

    config = detok_stage1.get_config("tiny")
    for paths, where, expected in (
            (" , ", data_dir, "config.data.sources.images.paths=' , ' names no TFDS dataset"),
            ("solid_colours", data_dir, "config.data.sources.images: TFDS source 'solid_colours': expected"),
            ("nothing_here:train", data_dir, "config.data.sources.images: TFDS dataset 'nothing_here' is not prepared"),
            ("solid_colours:train", str(tmp_path), f"'solid_colours' is not prepared in {tmp_path}")):
        config.data.sources.images.update(format="tfds", paths=paths, data_dir=where)
        with pytest.raises(TrainConfigError) as err:
            build_data(config, None, 28)
        assert expected in str(err.value) and "\n" not in str(err.value)
    assert len(open_source("tfds", ["solid_colours:train", "solid_colours:test"], kind="caption",
                           data_dir=data_dir)) == 8
