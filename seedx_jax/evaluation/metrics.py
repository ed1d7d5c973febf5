"""Benchmark metrics, plain Python: answer normalisation and scores of the benchmarks `seedx-jax eval` runs.

Each rule follows the benchmark's own evaluation code, named in the function's docstring:

- open VQA (VQAv2, TextVQA): `normalize_vqa_answer`, `vqa_soft_accuracy` (VQA API, vqaEval.py);
- exact match (GQA): `normalize_exact`, `exact_match`;
- yes/no hallucination (POPE): `yes_no`, `binary_scores` (POPE, evaluate.py); MME: `mme_score`
  (MME eval_tool, calculation.py);
- multiple choice (SEED-Bench style): `choice_letter`, `choice_from_text`, `accuracy_by_category`;
- grounding (RefCOCO style): `box_iou`, `grounding_scores`.

Rates are fractions in [0, 1] except the MME scores, which are percentages as MME reports them.
"""
from __future__ import annotations

import collections
import math
import re
from typing import Iterable, Sequence

import numpy as np

# --- VQA answer normalisation (VQA API, PythonEvaluationTools/vqaEvaluation/vqaEval.py) -------------------

# Marks removed or replaced by a space; the apostrophe and the period are not among them.
_VQA_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                    ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official pattern `(?!<=\d)(\.)(?!\d)` means a lookbehind but is written as a lookahead that never
# fails before a ".", so only a following digit keeps a period: "3.5" and ".5" keep it, "5." loses it.
_PERIOD = re.compile(r"\.(?!\d)")
# The official call passes re.UNICODE (== 32) where `re.sub` takes its count, so at most 32 periods go.
_PERIOD_COUNT = 32
# "none" is in the official number map too.
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
# The official table, less its entries that cannot fire: keys with capitals (the words are lowercased
# before the lookup: "Im", "Ive", "Id've", "I'dve") and identities ("let's", "she's"). Its odd entries
# ("somebody'd" -> "somebodyd", no "couldntve") are kept, so scores match the official ones.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}


def _vqa_punctuation(text: str) -> str:
    # Whether a mark is deleted or becomes a space is decided on the whole input, mark by mark: deleted when
    # that mark touches a space anywhere, or when a digit-comma-digit ("1,000") occurs anywhere.
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _VQA_PUNCTUATION:
        delete = has_digit_comma or mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if delete else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def normalize_vqa_answer(text: str) -> str:
    """The VQAv2 / TextVQA answer normalisation (VQA API, PythonEvaluationTools/vqaEvaluation/vqaEval.py).

    In order: newlines and tabs become spaces and the ends are stripped; punctuation (`processPunctuation`):
    each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted if that mark is next to a space anywhere in
    the answer or the answer holds a digit-comma-digit ("1,000" -> "1000"), else replaced by a space
    ("a-b" -> "a b"); a period goes unless a digit follows it ("3.5" stays, "hello.world" -> "helloworld");
    apostrophes stay; then (`processDigitArticle`) lowercase, split on whitespace, number words none/zero..ten
    -> digits, articles a/an/the dropped, the contraction table applied word by word ("dont" -> "don't").
    Returns the words joined by single spaces ("" when nothing is left).
    """
    text = _vqa_punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_soft_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 / TextVQA accuracy of one prediction against the annotators' answers, in [0, 1].

    For each annotator: min(1, (how many of the OTHER annotators gave the prediction) / 3), averaged over the
    annotators (vqaEval.py `evaluate`); with 10 answers this is the official average over the 10 subsets of
    9. The prediction and every answer go through `normalize_vqa_answer` (the official code normalises the
    annotation answers with the punctuation step only, as they were normalised when the data set was made).
    Raises ValueError when `answers` is empty.
    """
    if not answers:
        raise ValueError("vqa_soft_accuracy: no annotator answers to score against")
    prediction = normalize_vqa_answer(prediction)
    hits = [normalize_vqa_answer(answer) == prediction for answer in answers]
    matching = sum(hits)
    return math.fsum(min(1.0, (matching - hit) / 3) for hit in hits) / len(hits)


# --- exact match (GQA) ----------------------------------------------------------------------------------


def normalize_exact(text: str) -> str:
    """Lowercase, periods to spaces, whitespace collapsed and stripped ("The  Cat." -> "the cat").

    GQA answers are single lowercase words, so its accuracy is exact match after this; the shapes-world
    demo scores its answers the same way.
    """
    return " ".join(text.lower().replace(".", " ").split())


def exact_match(prediction: str, answer: str) -> bool:
    """Whether the prediction equals the answer after `normalize_exact` on both."""
    return normalize_exact(prediction) == normalize_exact(answer)


# --- yes/no (POPE, MME) ---------------------------------------------------------------------------------

_NO_WORDS = frozenset({"No", "no", "not"})


def yes_no(text: str) -> str:
    """A free answer read as "yes" or "no" by POPE's rule (POPE repository, evaluate.py).

    The text up to its first "." is kept, commas are dropped, the rest is split on single spaces; the answer
    is "no" when a word is exactly "No", "no" or "not" (the official list: "Not" is absent, and "no!" or
    "No\\n" are not the word "no"), else "yes" - so an empty or unrelated answer counts as yes, as in POPE.
    """
    words = text.split(".", 1)[0].replace(",", "").split(" ")
    return "no" if _NO_WORDS.intersection(words) else "yes"


def _yes_no_label(value: str, name: str, index: int) -> bool:
    label = value.strip().lower()
    if label not in ("yes", "no"):
        raise ValueError(f"binary_scores: {name}[{index}] is {value!r}, not 'yes' or 'no'")
    return label == "yes"


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def binary_scores(predictions: Sequence[str], labels: Sequence[str]) -> dict:
    """POPE's scores of yes/no predictions (POPE, evaluate.py), "yes" the positive class.

    `predictions` and `labels` are "yes"/"no" strings (case and surrounding spaces ignored; read free answers
    with `yes_no` first). Returns floats accuracy, precision, recall, f1, yes_ratio (fraction of predictions
    "yes") and int counts tp, fp, tn, fn. Where POPE would divide by zero: precision is 0.0 when nothing is
    predicted "yes", recall 0.0 when no label is "yes", f1 0.0 when precision + recall is 0; with no
    predictions at all accuracy, precision, recall, f1 and yes_ratio are NaN (no data). Raises ValueError on
    sequences of different lengths or a value other than yes/no.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"binary_scores: {len(predictions)} predictions but {len(labels)} labels")
    pred = [_yes_no_label(p, "predictions", i) for i, p in enumerate(predictions)]
    gold = [_yes_no_label(y, "labels", i) for i, y in enumerate(labels)]
    tp = sum(p and y for p, y in zip(pred, gold))
    fp = sum(p and not y for p, y in zip(pred, gold))
    tn = sum(not p and not y for p, y in zip(pred, gold))
    fn = sum(not p and y for p, y in zip(pred, gold))
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    if not pred:
        nan = float("nan")
        return {"accuracy": nan, "precision": nan, "recall": nan, "f1": nan, "yes_ratio": nan, **counts}
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(pred), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / len(pred), **counts}


def mme_score(rows: Sequence[tuple[str, str, bool]]) -> dict:
    """MME scores (MME eval_tool, calculation.py) from (category, image key, correct) rows, one per question.

    Per category: acc = percent of its questions answered correctly, acc_plus = percent of its images whose
    questions (MME asks two per image) are all correct, score = acc + acc_plus (0..200). Images are grouped
    within a category. Returns {"per_category": {category: {"acc", "acc_plus", "score"}} (categories
    sorted), "total": sum of the category scores} (MME reports perception and cognition totals as such
    sums over their categories). No rows: no categories, total 0.0.
    """
    questions: dict[str, list[bool]] = collections.defaultdict(list)
    images: dict[str, dict[str, bool]] = collections.defaultdict(dict)
    for category, image, correct in rows:
        questions[category].append(bool(correct))
        images[category][image] = images[category].get(image, True) and bool(correct)
    per_category = {}
    for category in sorted(questions):
        acc = 100.0 * sum(questions[category]) / len(questions[category])
        acc_plus = 100.0 * sum(images[category].values()) / len(images[category])
        per_category[category] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    return {"per_category": per_category, "total": math.fsum(c["score"] for c in per_category.values())}


# --- multiple choice (SEED-Bench style) -----------------------------------------------------------------

# The whole answer is one letter, maybe wrapped in brackets or followed by punctuation: "b", "(B)", "B.".
_BARE_LETTER = re.compile(r"[\s(\[{*]*([A-Za-z])[\s)\]}*.:,;!]*")
# The answer opens with an option marker: "B. a cat", "(B) a cat", "B) a cat", "B: a cat".
_LEADING_MARKER = re.compile(r"\s*(?:\(([A-Z])\)|([A-Z])[.):](?=\s|$))")
# "Answer: B", "The answer is B.", "the correct answer is (C)": a capital not followed by a word character.
_ANSWER_PHRASE = re.compile(r"(?i:answer)\s*(?:is\s*)?:?\s*\(?([A-Z])(?![\w'])")


def choice_letter(text: str, num_options: int) -> int | None:
    """The option a generated answer picks by letter, as an index (A -> 0), or None.

    Accepted (SEED-Bench style answers): the whole answer is a letter, optionally bracketed or followed by
    punctuation ("B", "(B)", "B.", "b" - lowercase only in this form); the answer opens with a capital as an
    option marker ("B. ...", "(B) ...", "B) ...", "B: ..."); or a capital follows "answer", "answer is" or
    "answer:" ("Answer: B", "The answer is B."). The first form that matches decides; a letter beyond the
    options gives None. "A cat", "Bananas" and "" give None. Raises ValueError unless 1 <= num_options <= 26.
    """
    if not 1 <= num_options <= 26:
        raise ValueError(f"choice_letter: num_options is {num_options}, not in 1..26")
    match = _BARE_LETTER.fullmatch(text) or _LEADING_MARKER.match(text) or _ANSWER_PHRASE.search(text)
    if match is None:
        return None
    letter = next(group for group in match.groups() if group is not None)
    index = ord(letter.upper()) - ord("A")
    return index if index < num_options else None


def choice_from_text(text: str, options: Sequence[str]) -> int | None:
    """The option an answer picks: `choice_letter`, else the only option whose text the answer contains.

    Containment is of whole words after `normalize_exact` on both (case ignored: "a red cat" contains option
    "Red Cat"; "category" does not contain "cat"); none or several options contained (including an option
    inside a longer one, "red" and "red cat") give None. Options that normalise to "" never match.
    """
    letter = choice_letter(text, len(options))
    if letter is not None:
        return letter
    answer = normalize_exact(text)
    found = [i for i, option in enumerate(map(normalize_exact, options))
             if option and re.search(rf"(?<!\w){re.escape(option)}(?!\w)", answer)]
    return found[0] if len(found) == 1 else None


def accuracy_by_category(correct: Sequence[bool], categories: Sequence[str]) -> dict[str, float]:
    """Fraction correct per category (keys sorted), e.g. SEED-Bench's per-dimension accuracy.

    Raises ValueError when the two sequences differ in length.
    """
    if len(correct) != len(categories):
        raise ValueError(f"accuracy_by_category: {len(correct)} results but {len(categories)} categories")
    groups: dict[str, list[bool]] = collections.defaultdict(list)
    for ok, category in zip(correct, categories):
        groups[category].append(bool(ok))
    return {category: sum(groups[category]) / len(groups[category]) for category in sorted(groups)}


# --- grounding (RefCOCO style) --------------------------------------------------------------------------


def _box(box, name: str) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in box)
    if len(values) != 4:
        raise ValueError(f"box_iou: box {name} has {len(values)} numbers, not 4 (x0, y0, x1, y1)")
    return values


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) pixel boxes, x1/y1 exclusive as in PIL.

    A box with x1 <= x0 or y1 <= y0 is empty; 0.0 when the union is empty. Raises ValueError when a box is
    not 4 numbers.
    """
    ax0, ay0, ax1, ay1 = _box(a, "a")
    bx0, by0, bx1, by1 = _box(b, "b")
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    area_a = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0)
    area_b = max(0.0, bx1 - bx0) * max(0.0, by1 - by0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def grounding_scores(ious: Sequence[float]) -> dict:
    """RefCOCO-style grounding scores: "mean_iou" and "iou_at_0.5" (fraction of IoUs >= 0.5, the standard
    accuracy of referring-expression comprehension); both NaN when there are no IoUs."""
    if not ious:
        return {"mean_iou": float("nan"), "iou_at_0.5": float("nan")}
    return {"mean_iou": mean(ious), "iou_at_0.5": mean(iou >= 0.5 for iou in ious)}


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean in float64 (NumPy's pairwise summation, as the shapes-world demo always reported
    its figures), NaN when there are no values."""
    values = list(values)
    return float(np.mean(np.asarray(values, np.float64))) if values else float("nan")
