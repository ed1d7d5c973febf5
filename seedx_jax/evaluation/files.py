"""Benchmark files in their published formats -> `Item`s (docs/evaluation.md lists every layout).

* `.jsonl`, or a `.json` list of objects: one record per line / element, fields named as the common
  releases name them (POPE's `text` / `label`, GenEval's `evaluation_metadata.jsonl`, LLaVA-style
  `question` / `answer`, `options` or `choice_a`..., RefCOCO boxes as `bbox` [x, y, w, h] or `box`
  [x0, y0, x1, y1]); `FIELDS` below is the whole list.
* SEED-Bench's `SEED-Bench.json` (`questions`, `question_type`); video questions are skipped.
* VQAv2's questions file with `--annotations` (its annotations file); images `COCO_<subtype>_<id:012>.jpg`.
* TextVQA's `TextVQA_0.5.1_val.json` (`data`: question, image_id, answers); images `<image_id>.jpg`.
* GQA's `testdev_balanced_questions.json` ({id: {imageId, question, answer}}); images `<imageId>.jpg`.

Relative image names are joined to `images_dir` (default: the data file's folder). A record that cannot be
evaluated (malformed JSON, a missing image file, a gold answer that is not an option, ...) is a
`Problem` with its `file:line`; a file that is not one of these formats is one `SourceFormatError`.
"""
from __future__ import annotations

import json
import os
from typing import Any

from seedx_jax.evaluation.items import Item, Problem
from seedx_jax.paths import display, resolve


class SourceFormatError(ValueError):
    """A data source that is not a format its task reads; the message names it and says what is read."""


# field names, in order of preference, of a jsonl record
FIELDS = {
    "id": ("id", "question_id", "questionId", "qid"),
    "image": ("image", "image_path", "images", "source_image", "file_name", "filename"),
    "text": ("question", "text", "prompt", "caption", "expression", "sentence", "instruction"),
    "answer": ("answer", "label", "answers"),
    "category": ("category", "question_type", "tag", "answer_type", "type"),
}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _first(fields: dict, names: tuple[str, ...]) -> Any:
    return next((fields[n] for n in names if fields.get(n) not in (None, "", [])), None)


def _images(value, images_dir: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    return tuple(v if os.path.isabs(v) else os.path.join(images_dir, v) for v in values if isinstance(v, str))


def _answers(value) -> tuple[str, ...]:
    """An answer, a list of answers, or VQAv2's [{"answer": ...}, ...] -> strings."""
    values = value if isinstance(value, list) else [value]
    return tuple(str(v["answer"] if isinstance(v, dict) else v) for v in values if v is not None)


def _options(fields: dict) -> tuple[str, ...]:
    listed = fields.get("options") or fields.get("choices")
    if isinstance(listed, list):
        return tuple(str(o) for o in listed)
    return tuple(str(fields[k]) for k in (f"choice_{c}" for c in "abcdefghijklmnopqrstuvwxyz") if k in fields)


def gold_option(answer, options: tuple[str, ...]) -> int | None:
    """The index of a gold answer given as a letter ("B"), an index (1) or the option's text."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer if 0 <= answer < len(options) else None
    text = str(answer).strip()
    if len(text) == 1 and text.upper() in LETTERS[:len(options)]:
        return LETTERS.index(text.upper())
    matches = [i for i, o in enumerate(options) if o.strip().lower() == text.lower()]
    return matches[0] if len(matches) == 1 else None


def _box(fields: dict) -> tuple[float, ...] | None:
    if isinstance(fields.get("box"), list) and len(fields["box"]) == 4:
        return tuple(float(v) for v in fields["box"])
    if isinstance(fields.get("bbox"), list) and len(fields["bbox"]) == 4:  # COCO: x, y, width, height
        x, y, w, h = (float(v) for v in fields["bbox"])
        return x, y, x + w, y + h
    return None


def record_item(task: str, fields: dict, location: str, key: str, images: tuple = ()) -> Item | Problem:
    """One jsonl-style record with its images (paths checked, or decoded TFDS features) -> the `Item` of
    `task`, or the `Problem` that keeps it out; `key`: its id when the record has none."""
    named_id = _first(fields, FIELDS["id"])
    item_id = key if named_id is None else str(named_id)
    text = _first(fields, FIELDS["text"])
    category = str(_first(fields, FIELDS["category"]) or "")
    if task != "t2i" and not images:
        return Problem(location, f"no image field (one of {', '.join(FIELDS['image'])})")
    if task != "reconstruct" and not (isinstance(text, str) and text.strip()):
        return Problem(location, f"no text (one of {', '.join(FIELDS['text'])})")
    item = Item(item_id, location, str(text or ""), images, category=category)
    answer = _first(fields, FIELDS["answer"])
    if task == "mc":
        item.options = _options(fields)
        if len(item.options) < 2 or any(not o.strip() for o in item.options):
            return Problem(location, "fewer than 2 options, or an empty one (options, choices or choice_a...)")
        gold = gold_option(answer, item.options)
        if gold is None:
            return Problem(location, f"unknown answer option ({answer!r}; the options are {LETTERS[0]}-"
                                     f"{LETTERS[len(item.options) - 1]})")
        item.answers = (LETTERS[gold],)
    elif task == "yesno":
        label = str(answer or "").strip().lower()
        if label not in ("yes", "no"):
            return Problem(location, f"label not yes or no ({answer!r})")
        item.answers = (label,)
        item.meta = {"image_key": str(_first(fields, FIELDS["image"]))}
    elif task == "vqa":
        item.answers = _answers(answer)
        if not item.answers:
            return Problem(location, "no answer (answer or answers)")
        item.meta = {"match": "exact" if fields.get("match") == "exact" else "soft"}
    elif task == "grounding":
        item.box = _box(fields)
        if item.box is None or not (item.box[0] < item.box[2] and item.box[1] < item.box[3]):
            return Problem(location, "no box: box [x0, y0, x1, y1] or bbox [x, y, w, h] in pixels, with area")
    elif task == "t2i":
        item.meta = {k: v for k, v in fields.items() if k != "error"}  # GenEval's scorer reads it back
    return item


def _jsonl(path: str) -> list[tuple[str, Any]]:
    rows = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{number}", json.loads(line)))
                except ValueError as err:  # the parser's position within the line, not the file's
                    detail = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)
                    rows.append((f"{path}:{number}", Problem(f"{path}:{number}", f"malformed line ({detail})")))
    if rows and all(isinstance(r, Problem) for _, r in rows[:8]):
        raise SourceFormatError(f"{display(path)}: not a JSON-lines file (its first lines are not JSON)")
    return rows


def _records(task: str, rows, images_dir: str) -> list[Item | Problem]:
    out = []
    for k, (location, fields) in enumerate(rows):
        if isinstance(fields, Problem):
            out.append(fields)
        elif not isinstance(fields, dict):
            out.append(Problem(location, "malformed record (not a JSON object)"))
        else:
            out.append(_file_record(task, fields, location, images_dir, str(k)))
    return out


def _file_record(task: str, fields: dict, location: str, images_dir: str, key: str) -> Item | Problem:
    named = _first(fields, FIELDS["image"])
    images = _images(named, images_dir) if named else ()
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        return Problem(location, f"missing image ({display(missing[0])})")
    return record_item(task, fields, location, key, images)


def _seed_bench(task: str, data: dict, path: str, images_dir: str) -> list[Item | Problem]:
    if task != "mc":
        raise SourceFormatError(f"{display(path)} is SEED-Bench (multiple choice): evaluate it with the mc task")
    names = {v: k for k, v in (data.get("question_type") or {}).items()}
    out = []
    for k, q in enumerate(data["questions"]):
        location = f"{path}:questions[{k}]"
        if not isinstance(q, dict):
            out.append(Problem(location, "malformed record (not a JSON object)"))
            continue
        if q.get("data_type", "image") != "image":
            out.append(Problem(location, f"not an image question ({q.get('data_type')}: SEED-X takes images)"))
            continue
        fields = dict(q, image=q.get("data_id"), category=names.get(q.get("question_type_id"),
                                                                    str(q.get("question_type_id", ""))))
        out.append(_file_record("mc", fields, location, images_dir, str(k)))
    return out


def _vqav2(task: str, data: dict, path: str, images_dir: str, annotations: str | None) -> list[Item | Problem]:
    if not annotations:
        raise SourceFormatError(f"{display(path)} is a VQAv2 questions file: pass its annotations file with "
                                "--annotations (e.g. v2_mscoco_val2014_annotations.json)")
    try:
        with open(resolve(annotations)) as f:
            answers = {a["question_id"]: a for a in json.load(f)["annotations"]}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise SourceFormatError(f"--annotations {annotations}: not a VQAv2 annotations file ({type(err).__name__}: "
                                f"{err})") from None
    subtype = data.get("data_subtype", "val2014")
    out = []
    for k, q in enumerate(data["questions"]):
        location = f"{path}:questions[{k}]"
        a = answers.get(q.get("question_id"))
        if a is None:
            out.append(Problem(location, f"no annotation (question {q.get('question_id')})"))
            continue
        fields = dict(q, image=f"COCO_{subtype}_{int(q['image_id']):012d}.jpg", answers=a.get("answers"),
                      category=a.get("answer_type", ""))
        out.append(_file_record(task, fields, location, images_dir, str(k)))
    return out


def read_file(task: str, path: str, *, images_dir: str | None = None,
              annotations: str | None = None) -> list[Item | Problem]:
    """The items of `task` in the benchmark file `path` (a path as typed).

    Raises:
      FileNotFoundError: no such file.
      SourceFormatError: not a format of this module, or one that another task reads.
    """
    path = resolve(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{display(path)}: no such file")
    images_dir = resolve(images_dir) if images_dir else os.path.dirname(path)
    if images_dir and not os.path.isdir(images_dir):
        raise FileNotFoundError(f"--images {display(images_dir)}: no such folder")
    if path.endswith(".jsonl"):
        if annotations:
            raise SourceFormatError(f"--annotations is read only with a VQAv2 questions file, not {display(path)}")
        return _records(task, _jsonl(path), images_dir)
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise SourceFormatError(f"{display(path)}: not a JSON or JSON-lines file ({err})") from None
    if isinstance(data, list):
        return _records(task, [(f"{path}:[{k}]", r) for k, r in enumerate(data)], images_dir)
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        first = next((q for q in data["questions"] if isinstance(q, dict)), {})
        if "choice_a" in first:
            return _seed_bench(task, data, path, images_dir)
        if "image_id" in first:
            return _vqav2(task, data, path, images_dir, annotations)
    if isinstance(data, dict) and isinstance(data.get("data"), list):  # TextVQA
        rows = [(f"{path}:data[{k}]", dict(r, image=f"{r.get('image_id')}.jpg") if isinstance(r, dict) else r)
                for k, r in enumerate(data["data"])]
        return _records(task, rows, images_dir)
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "imageId" in v for v in data.values()):
        rows = [(f"{path}:{qid}", dict(r, id=qid, image=f"{r['imageId']}.jpg", match="exact"))
                for qid, r in data.items()]
        return _records(task, rows, images_dir)  # GQA
    raise SourceFormatError(f"{display(path)}: not a benchmark file seedx-jax eval reads (a jsonl of records, "
                            "SEED-Bench, VQAv2 questions, TextVQA or GQA json; see docs/evaluation.md)")
