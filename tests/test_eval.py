"""`seedx-jax eval` end to end on tiny scripted pipelines (tests/eval_fixtures.py: every chat answer is
"car", grounding answers one known box, text-to-image draws): each task's metrics against values worked
out by hand, typed as a user types the command (relative paths, another working directory), resume after
a kill, and bad input as one line before any weight loads."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from seedx_jax.cli import main
from seedx_jax.evaluation.evaluate import evaluate
from seedx_jax.pipelines import SeedX
from eval_fixtures import ANSWER_BOX, build_pipelines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    return build_pipelines(tmp_path_factory.mktemp("eval_pipes"))


@pytest.fixture(scope="module")
def chat_pipe(pipes):
    """The chat pipeline for the tests that run the Python API several times: its weights load once, on the
    first evaluation."""
    return SeedX.open(str(pipes["chat"]))


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def run(*argv):
    return main([str(a) for a in argv])


def read_metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_vqa_soft_accuracy_relative_paths_from_another_directory(pipes, tmp_path, monkeypatch, capsys):
    """VQAv2 soft accuracy of the answer "car": 10 x car -> 1; 2 x car + 8 x bus -> (2 x 1/3 + 8 x 2/3) / 10
    = 0.6; 10 x bus -> 0; one gold answer "Car." -> 1 (equal after normalisation); mean 2.6 / 4. A missing
    image and a malformed line are skipped with file:line."""
    data = tmp_path / "bench"
    data.mkdir()
    Image.open(pipes["chat"].parent / "photo.png").save(data / "a.png")
    write_jsonl(data / "vqa.jsonl", [
        {"question_id": 1, "image": "a.png", "question": "What is it?", "answers": ["car"] * 10, "answer_type": "other"},
        {"question_id": 2, "image": "a.png", "question": "What is it?",
         "answers": [{"answer": "Car."}] * 2 + [{"answer": "bus"}] * 8, "answer_type": "other"},
        {"question_id": 3, "image": "missing.png", "question": "What?", "answers": ["car"]},
        "{not json",
        {"question_id": 4, "image": "a.png", "question": "What is it?", "answers": ["bus"] * 10, "answer_type": "num"},
        {"question_id": 5, "image": "a.png", "question": "What is it?", "answer": "Car.", "answer_type": "single"}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    checkpoint = os.path.relpath(pipes["chat"])
    assert run("eval", "vqa", "--checkpoint", checkpoint, "--data", "../bench/vqa.jsonl", "--out", "runs/vqa",
               "--grids", "1x1", "--batch-size", "2", "--quiet") == 0
    metrics = read_metrics(elsewhere / "runs" / "vqa")
    assert metrics["records"] == 6 and metrics["evaluated"] == 4
    assert metrics["metrics"]["accuracy"] == pytest.approx(2.6 / 4)
    assert metrics["metrics"]["per_category"] == pytest.approx({"other": 0.8, "num": 0.0, "single": 1.0})
    skipped = metrics["skipped"]
    assert skipped["count"] == 2
    assert any(r.endswith(f"vqa.jsonl:3: missing image ({data / 'missing.png'})") for r in skipped["records"]), skipped
    assert skipped["by_reason"] == {"malformed line": 1, "missing image": 1}
    assert any("vqa.jsonl:4: malformed line" in r for r in skipped["records"]), skipped
    answers = [json.loads(line)["answer"] for line in open("runs/vqa/predictions.jsonl")]
    assert answers == ["car"] * 4
    assert "vqa: 4 of 6 records evaluated, 2 skipped; accuracy 0.6500" in capsys.readouterr().out


def test_multiple_choice_by_likelihood_and_by_generation(pipes, tmp_path):
    """SEED-Bench json: the scripted model gives "car" every token's logit (10 x the RMS norm) and every
    other option 0, so the likelihood picks the "car" option, and the generated "car" names it too;
    question 1's gold is car, question 2's is dog: 50% each way, per dimension 1.0 / 0.0. The video
    question and the answer "E" (no such option) are skipped."""
    Image.open(pipes["chat"].parent / "photo.png").save(tmp_path / "img.png")
    base = {"data_id": "img.png", "question": "Which vehicle?", "choice_a": "bus", "choice_b": "car",
            "choice_c": "dog", "choice_d": "tree"}
    (tmp_path / "SEED-Bench.json").write_text(json.dumps({
        "question_type": {"Instance Identity": 1, "Instances Counting": 2},
        "questions": [dict(base, question_id="q1", answer="B", question_type_id=1),
                      dict(base, question_id="q2", answer="C", question_type_id=2),
                      dict(base, question_id="q3", answer="A", question_type_id=1, data_type="video"),
                      dict(base, question_id="q4", answer="E", question_type_id=1)]}))
    out = tmp_path / "mc"
    assert run("eval", "mc", "--checkpoint", pipes["chat"], "--data", tmp_path / "SEED-Bench.json", "--out", out,
               "--grids", "1x1", "--quiet") == 0
    m = read_metrics(out)
    assert m["evaluated"] == 2 and m["skipped"]["count"] == 2
    assert m["metrics"]["accuracy_likelihood"] == 0.5 and m["metrics"]["accuracy_generation"] == 0.5
    assert m["metrics"]["per_category_likelihood"] == {"Instance Identity": 1.0, "Instances Counting": 0.0}
    assert m["skipped"]["by_reason"] == {"unknown answer option": 1, "not an image question": 1}
    scores = [json.loads(line)["option_scores"] for line in open(out / "predictions.jsonl")]
    assert all(s[1] > max(s[0], s[2], s[3]) + 1 for s in scores)


def test_pope_and_mme_scores(pipes, tmp_path):
    """POPE jsonl; "car" counts as yes (POPE's rule), so yes-ratio 1, recall 1, precision = accuracy = 2/4,
    F1 = 2 x 0.5 x 1 / 1.5; MME: one image with both questions (one wrong) -> acc 50, acc+ 0."""
    Image.open(pipes["chat"].parent / "photo.png").save(tmp_path / "p.png")
    rows = [{"question_id": k, "image": "p.png", "text": "Is there a car in the image?", "label": label,
             "category": "adversarial"} for k, label in enumerate(["yes", "no", "yes", "no"])]
    data = write_jsonl(tmp_path / "pope.jsonl", rows + [{"question_id": 9, "image": "p.png", "text": "Is it?",
                                                         "label": "maybe"}])
    out = tmp_path / "pope"
    assert run("eval", "yesno", "--checkpoint", pipes["chat"], "--data", data, "--out", out, "--grids", "1x1",
               "--quiet") == 0
    m = read_metrics(out)["metrics"]
    assert (m["accuracy"], m["precision"], m["recall"], m["yes_ratio"]) == (0.5, 0.5, 1.0, 1.0)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["mme"]["per_category"]["adversarial"] == {"acc": 50.0, "acc_plus": 0.0, "score": 50.0}
    assert read_metrics(out)["skipped"]["by_reason"] == {"label not yes or no": 1}


def test_grounding_iou_and_t2i_geneval_layout(pipes, tmp_path):
    """Base template: the box answer (194, 93, 305, 174) against itself (IoU 1) and against (0, 0, 50, 50)
    (IoU 0): mean 0.5, hits 1 of 2. Text-to-image: a GenEval metadata file -> images/<n>/metadata.jsonl
    (the prompt's record) and images/<n>/samples/0000.png."""
    photo = pipes["base"].parent / "photo.png"
    x0, y0, x1, y1 = ANSWER_BOX
    data = write_jsonl(tmp_path / "refcoco.jsonl", [
        {"id": "r1", "image": str(photo), "expression": "the car", "bbox": [x0, y0, x1 - x0, y1 - y0]},
        {"id": "r2", "image": str(photo), "expression": "the tree", "box": [0, 0, 50, 50]}])
    out = tmp_path / "ground"
    assert run("eval", "grounding", "--checkpoint", pipes["base"], "--data", data, "--out", out, "--grids", "1x1",
               "--quiet") == 0
    m = read_metrics(out)["metrics"]
    assert (m["mean_iou"], m["iou_at_0.5"], m["no_box"]) == (0.5, 0.5, 0)

    prompts = [{"tag": "single_object", "include": [{"class": "car", "count": 1}], "prompt": "a photo of a car"},
               {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a red car"}]
    data = write_jsonl(tmp_path / "evaluation_metadata.jsonl", prompts)
    out = tmp_path / "t2i"
    assert run("eval", "t2i", "--checkpoint", pipes["base"], "--data", data, "--out", out, "--steps", "2",
               "--height", "32", "--width", "32", "--quiet") == 0
    assert read_metrics(out)["metrics"]["images_drawn"] == 1.0
    for k, record in enumerate(prompts):
        folder = out / "images" / f"{k:05d}"
        assert json.loads((folder / "metadata.jsonl").read_text()) == record
        assert np.asarray(Image.open(folder / "samples" / "0000.png")).shape == (32, 32, 3)


def test_a_tfds_dataset_prepared_locally_is_evaluated(pipes, tmp_path):
    """tfds:solid_questions:test (no builder code installed: read from its files): "car" against 10 x car
    and 10 x bus -> accuracy 0.5; the item locations name the dataset."""
    from tfds_fixtures import SolidQuestions, prepare

    prepare(SolidQuestions, str(tmp_path / "tfds"))
    out = tmp_path / "out"
    assert run("eval", "vqa", "--checkpoint", pipes["chat"], "--data", "tfds:solid_questions:test",
               "--tfds-data-dir", tmp_path / "tfds", "--out", out, "--grids", "1x1", "--quiet") == 0
    m = read_metrics(out)
    assert (m["records"], m["metrics"]["accuracy"], m["data"]) == (2, 0.5, "tfds:solid_questions:test")
    assert {p["id"] for p in map(json.loads, open(out / "predictions.jsonl"))} == {"0", "1"}


def test_reconstruct_scores_the_images_it_writes_and_skips_an_undecodable_one(pipes, tmp_path):
    """PSNR to the source resized to 32 x 32 (bicubic), recomputed here from the written PNG; a file that is
    not an image is skipped at prediction time with its file:line, and the run goes on."""
    photo = pipes["base"].parent / "photo.png"
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "flipped.png")
    data = write_jsonl(tmp_path / "images.jsonl", [{"id": "a", "image": str(photo)}, {"id": "b", "image": "broken.png"},
                                                   {"id": "c", "image": "flipped.png"}])
    out = tmp_path / "rec"
    assert run("eval", "reconstruct", "--checkpoint", pipes["base"], "--data", data, "--out", out, "--steps", "2",
               "--height", "32", "--width", "32", "--batch-size", "3", "--quiet") == 0
    m = read_metrics(out)
    assert (m["records"], m["evaluated"], m["skipped"]["count"]) == (3, 2, 1)
    assert m["skipped"]["by_reason"] == {"image does not decode": 1}
    assert m["skipped"]["records"][0].startswith(f"{data}:2: ")
    psnr = []
    for ordinal, source in ((0, photo), (2, tmp_path / "flipped.png")):
        drawn = np.asarray(Image.open(out / "images" / f"{ordinal:05d}.png"), np.float64)
        source = np.asarray(Image.open(source).resize((32, 32), Image.Resampling.BICUBIC), np.float64)
        psnr.append(10 * np.log10(255 ** 2 / np.mean((drawn - source) ** 2)))
    assert m["metrics"]["psnr"] == pytest.approx(np.mean(psnr))


@pytest.mark.parametrize("ragged", ["list", "object_array"])
def test_tfds_refcoco_layout(ragged):
    """TFDS ref_coco's layout (objects: bbox (ymin, xmin, ymax, xmax) fractions, refexp/raw per object), as
    `tfds.data_source` returns an example: one grounding item per expression, its object's box in pixels.
    (A prepared copy cannot be made here: TFDS serialises nested sequences through TensorFlow.)"""
    from seedx_jax.evaluation.tfds_items import read_tfds

    raw = [np.asarray([b"the car", b"car on the left"], object), np.asarray([b"the corner"], object)]
    example = {"image": np.zeros((300, 500, 3), np.uint8), "image/id": 7, "objects": {
        "id": np.asarray([0, 1]), "bbox": np.asarray([[93 / 300, 194 / 500, 174 / 300, 305 / 500], [0, 0, 0.1, 0.1]],
                                                     np.float32),
        "refexp": {"refexp_id": [np.asarray([0, 1]), np.asarray([10])],
                   "raw": raw if ragged == "list" else np.asarray(raw + [None], object)[:2]}}}
    records, _ = read_tfds("grounding", "ref_coco/refcoco_unc:validation", [example])
    assert [r.text for r in records] == ["the car", "car on the left", "the corner"]
    assert records[0].box == pytest.approx(ANSWER_BOX, abs=1e-3) and records[2].box == pytest.approx((0, 0, 50, 30))
    assert records[1].image().size == (500, 300)


def test_tfds_coco_captions_layout_gives_prompts(tmp_path):
    """coco_captions' layout (prepared here by a look-alike builder): one t2i prompt per image, its first caption."""
    from seedx_jax.evaluation.data import open_data
    from tfds_fixtures import CocoCaptionsLike, caption, prepare

    prepare(CocoCaptionsLike, str(tmp_path), config="2014")
    prompts = open_data("t2i", "tfds:coco_captions/2014:train", tfds_data_dir=str(tmp_path)).items
    assert sorted(i.text for i in prompts) == sorted(caption(c) for c in ("red", "green", "blue"))


def _eval_command(pipes, data, out):
    return [sys.executable, "-m", "seedx_jax", "eval", "yesno", "--checkpoint", str(pipes["chat"]), "--data",
            str(data), "--out", str(out), "--grids", "1x1", "--batch-size", "2", "--quiet"]


def test_an_interrupted_evaluation_resumes_to_the_same_metrics(pipes, chat_pipe, tmp_path, monkeypatch):
    """Ctrl-C after a chunk of 8, a line cut off at the end of the file, rerun: the same metrics JSON as an
    uninterrupted run, every item predicted once (the SIGKILL version: the slow test below)."""
    from seedx_jax.evaluation.tasks import YesNo

    Image.open(pipes["chat"].parent / "photo.png").save(tmp_path / "p.png")
    data = write_jsonl(tmp_path / "pope.jsonl", [
        {"question_id": k, "image": "p.png", "text": "Is there a car?", "label": "yes" if k % 3 else "no",
         "category": ["random", "popular"][k % 2]} for k in range(12)])
    full, resumed = tmp_path / "full", tmp_path / "resumed"

    def evaluate_into(out):  # the Python API on the loaded pipeline; the POPE test's program
        return evaluate("yesno", str(pipes["chat"]), str(data), str(out), pipe=chat_pipe, grids=["1x1"], quiet=True)

    evaluate_into(full)
    assert chat_pipe.agent is not None and chat_pipe.detokenizer is None  # a text task leaves it on disk
    predict, chunks = YesNo.predict, []

    def interrupted(self, *args):
        if len(chunks) == 1:
            raise KeyboardInterrupt
        chunks.append(1)
        return predict(self, *args)

    monkeypatch.setattr(YesNo, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_into(resumed)
    monkeypatch.setattr(YesNo, "predict", predict)
    predictions = resumed / "predictions.jsonl"
    assert predictions.read_text().count("\n") == 8 and not (resumed / "metrics.json").exists()
    with open(predictions, "a") as f:
        f.write('{"id": "8", "answer": "ca')  # a line cut off by a kill
    evaluate_into(resumed)
    ids = [json.loads(line)["id"] for line in predictions.read_text().splitlines()]
    assert sorted(ids, key=int) == [str(k) for k in range(12)]
    assert (resumed / "metrics.json").read_text() == (full / "metrics.json").read_text()
    assert chat_pipe.load_weights().detokenizer is not None  # a drawing task's load adds it


@pytest.mark.slow  # ~30 s: three processes
def test_a_killed_evaluation_resumes_to_the_same_metrics(pipes, tmp_path):
    """SIGKILL after some chunks (and a cut-off last line), rerun: the metrics JSON equals an uninterrupted
    run's, and every item has exactly one prediction."""
    Image.open(pipes["chat"].parent / "photo.png").save(tmp_path / "p.png")
    data = write_jsonl(tmp_path / "pope.jsonl", [
        {"question_id": k, "image": "p.png", "text": "Is there a car?", "label": "yes" if k % 3 else "no",
         "category": ["random", "popular"][k % 2]} for k in range(40)])
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert subprocess.run(_eval_command(pipes, data, full), cwd=ROOT).returncode == 0
    child = subprocess.Popen(_eval_command(pipes, data, resumed), cwd=ROOT)
    predictions = resumed / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if predictions.exists() and predictions.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    lines = predictions.read_text().count("\n")
    assert 6 <= lines < 40, lines
    with open(predictions, "a") as f:
        f.write('{"id": "39", "answer": "ca')  # a line cut off by the kill
    assert subprocess.run(_eval_command(pipes, data, resumed), cwd=ROOT).returncode == 0
    ids = [json.loads(line)["id"] for line in predictions.read_text().splitlines()]
    assert sorted(ids, key=int) == [str(k) for k in range(40)]
    assert (resumed / "metrics.json").read_text() == (full / "metrics.json").read_text()


@pytest.mark.parametrize("argv,message", [
    (["nonsense"], "argument task: invalid choice: 'nonsense'"),
    (["vqa", "--data", "{tmp}/photo.png"], "not a JSON or JSON-lines file"),
    (["vqa", "--data", "{tmp}/nowhere.jsonl"], "no such file"),
    (["vqa", "--data", "tfds:shapes_world:test", "--tfds-data-dir", "{tmp}/tfds"], "shapes_world"),
    (["mc", "--data", "{tmp}/vqa.jsonl"], "no mc item to evaluate; 1 record(s) skipped"),
    (["vqa", "--data", "{tmp}/vqa.jsonl", "--template", "Q: {query}"], "--template: template 'Q: {query}' must hold"),
    (["vqa", "--data", "{tmp}/vqa.jsonl", "--out", "{tmp}/theirs"], "holds other files"),
    (["t2i", "--data", "{tmp}/vqa.jsonl", "--height", "33"], "--height"),
    (["t2i", "--data", "{tmp}/vqa.jsonl", "--guidance-scale", "-1"], "--guidance-scale: -1.0 must be > 0"),
    (["vqa", "--data", "{tmp}/vqa.jsonl", "--annotations", "{tmp}/vqa.jsonl"], "--annotations is read only with"),
])
def test_bad_input_is_one_line_before_any_weight_loads(pipes, tmp_path, capsys, argv, message):
    Image.open(pipes["chat"].parent / "photo.png").save(tmp_path / "photo.png")
    write_jsonl(tmp_path / "vqa.jsonl", [{"id": 1, "image": "photo.png", "question": "What?", "answer": "car"}])
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in args and args[0] != "nonsense":
        args += ["--out", str(tmp_path / "out")]
    assert run("eval", args[0], "--checkpoint", pipes["chat"], *args[1:]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "out" / "predictions.jsonl").exists()


def test_other_settings_in_the_same_folder_are_refused_unless_overwrite(pipes, chat_pipe, tmp_path, capsys):
    Image.open(pipes["chat"].parent / "photo.png").save(tmp_path / "p.png")
    data = write_jsonl(tmp_path / "v.jsonl", [{"id": 1, "image": "p.png", "question": "What?", "answer": "car"}])
    out = tmp_path / "out"

    def evaluate_into(**settings):  # the Python API on the loaded pipeline; the first VQA test's program
        return evaluate("vqa", str(pipes["chat"]), str(data), str(out), pipe=chat_pipe, grids=["1x1"], batch_size=2,
                        quiet=True, **settings)

    evaluate_into()
    evaluate_into(seed=5)  # greedy answers: the render settings are not a vqa run's, it resumes
    (out / "notes.txt").write_text("mine")
    assert run("eval", "vqa", "--checkpoint", pipes["chat"], "--data", data, "--out", out, "--grids", "1x1",
               "--batch-size", "2", "--template", "{question}") == 2
    assert ("holds an evaluation with other settings (settings.template: '{question}\\nAnswer the question using "
            "a single word or phrase.' then, '{question}' now)") in capsys.readouterr().err
    evaluate_into(template="{question}", overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["run"]["settings"]["template"] == "{question}"
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite replaces what the evaluation wrote, only
