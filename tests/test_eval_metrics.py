"""Benchmark metrics (seedx_jax/evaluation/metrics.py) against values derived by hand from each benchmark's
rules (VQA API vqaEval.py, POPE evaluate.py, MME calculation.py); the derivation is in the comments."""
import math

import pytest

from seedx_jax.evaluation.metrics import (accuracy_by_category, binary_scores, box_iou, choice_from_text,
                                          choice_letter, exact_match, grounding_scores, mean, mme_score,
                                          normalize_exact, normalize_vqa_answer, vqa_soft_accuracy, yes_no)


@pytest.mark.parametrize("text, expected", [
    # articles a/an/the dropped, after lowercasing
    ("the cat", "cat"),
    ("an apple", "apple"),
    ("A Dog", "dog"),
    # "!" touches no space and there is no digit,digit: it becomes a space, stripped by the split
    ("yes!", "yes"),
    # the apostrophe is not a VQA punctuation mark
    ("it's", "it's"),
    # digit-comma-digit: the comma is deleted, not spaced
    ("1,000", "1000"),
    # a period followed by a digit stays; one followed by anything else is deleted (no space)
    ("3.5", "3.5"),
    ("hello.world", "helloworld"),
    ("5.", "5"),
    # a digit-comma-digit anywhere deletes every mark, also the "-" of "x-ray"; "1, 2" is no such triple
    ("1,000 x-ray", "1000 xray"),
    ("1, 2 x-ray", "1 2 x ray"),
    # "-" touches no space: replaced by a space
    ("x-ray", "x ray"),
    # ", " occurs: the comma is deleted
    ("hello, world", "hello world"),
    # "/ " occurs somewhere, so every "/" is deleted, also the one inside "a/b"
    ("a/b and c / d", "ab and c d"),
    # "(" and ")" touch no space: both become spaces
    ("(3)", "3"),
    # decided on the answer as given: "(" becomes a space, yet "-" (checked later) still counts as touching
    # no space, so both hyphens become spaces ("xray" if decided on the text as "(" left it)
    ("well(-known) x-ray", "well known x ray"),
    # number words zero..ten, and "none", become digits; others stay
    ("two", "2"),
    ("ten", "10"),
    ("Zero", "0"),
    ("none", "0"),
    ("eleven", "eleven"),
    # contractions, word by word
    ("dont", "don't"),
    ("isnt", "isn't"),
    ("whats", "what's"),
    # the official key "Im" has a capital and words are lowercased first: it never fires
    ("Im", "im"),
    # combined: ", " -> comma deleted; "!" -> space; lower; "two" -> 2; "the" dropped; "dont" -> "don't"
    ("The Two Dogs, dont!", "2 dogs don't"),
    # combined: \n and \t -> spaces and stripped; "1,000" -> every comma deleted; the final "." deleted
    ("  Yes,\n1,000 dollars.\t", "yes 1000 dollars"),
    # combined: "m." loses its period (a space follows), "3.5" keeps its own
    ("It is 3.5 m. wide", "it is 3.5 m wide"),
    ("", ""),
])
def test_normalize_vqa_answer(text, expected):
    assert normalize_vqa_answer(text) == expected


@pytest.mark.parametrize("matching, expected", [
    # 10 annotators, `matching` of them gave the prediction; each annotator scores min(1, others matching / 3)
    (0, 0.0),  # nobody matches: 0
    (1, 0.3),  # the matching one sees 0 others -> 0; the 9 others see 1 -> 1/3: (9 * 1/3) / 10 = 0.3
    (2, 0.6),  # 2 see 1 -> 1/3; 8 see 2 -> 2/3: (2/3 + 16/3) / 10 = 6 / 10 = 0.6
    (3, 0.9),  # 3 see 2 -> 2/3; 7 see 3 -> 1: (2 + 7) / 10 = 0.9
    (4, 1.0),  # 4 see 3 -> 1; 6 see 4 -> min(1, 4/3) = 1: 10 / 10 = 1.0
])
def test_vqa_soft_accuracy_ten_annotators(matching, expected):
    answers = ["cat"] * matching + ["dog"] * (10 - matching)
    assert vqa_soft_accuracy("cat", answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_soft_accuracy_normalises_prediction_and_answers():
    # "The Two." -> "2"; the answers "2", "two", "Two!" -> "2" (3 matching), "3" x 7: as 3 of 10 above, 0.9
    answers = ["2", "two", "Two!"] + ["3"] * 7
    assert vqa_soft_accuracy("The Two.", answers) == pytest.approx(0.9, abs=1e-12)
    # a single annotator has no "others": 0 matching others -> 0.0 even for the same answer
    assert vqa_soft_accuracy("cat", ["cat"]) == 0.0
    # 4 annotators all "cat": each sees 3 others -> 1.0
    assert vqa_soft_accuracy("cat", ["cat"] * 4) == 1.0
    with pytest.raises(ValueError, match="no annotator answers"):
        vqa_soft_accuracy("cat", [])


def test_normalize_exact_and_exact_match():
    assert normalize_exact("  The  Cat. ") == "the cat"
    assert normalize_exact("a.b\tc") == "a b c"
    assert exact_match("Yes.", "yes")
    assert exact_match("Left ", "left")
    assert not exact_match("yes", "yes sir")
    assert not exact_match("cats", "cat")
    # periods become spaces, so a decimal point splits a number: the rule is that simple on purpose
    assert exact_match("3.5", "3 5")


@pytest.mark.parametrize("text, expected", [
    ("Yes, there is a dog in the image.", "yes"),
    ("No, there is not.", "no"),              # commas dropped -> "No" is a word
    ("There is no dog.", "no"),
    ("The dog is not in the image", "no"),
    ("There is a dog. No other animal.", "yes"),  # only the first sentence counts
    ("Not at all.", "yes"),                   # "Not" is not in POPE's list (No, no, not)
    ("no!", "yes"),                           # "no!" is not the word "no"
    ("Nope", "yes"),
    ("nothing", "yes"),
    ("banana", "yes"),                        # unrelated answers count as yes, as in POPE
    ("", "yes"),
])
def test_yes_no(text, expected):
    assert yes_no(text) == expected


def test_binary_scores_hand_table():
    predictions = ["yes", "yes", "yes", "no", "no", "no", "yes", "no", "no", "no"]
    labels = ["yes", "no", "yes", "yes", "no", "no", "yes", "yes", "no", "no"]
    # tp: 0, 2, 6 -> 3; fp: 1 -> 1; fn: 3, 7 -> 2; tn: 4, 5, 8, 9 -> 4
    # accuracy (3 + 4) / 10 = 0.7; precision 3 / 4 = 0.75; recall 3 / 5 = 0.6;
    # f1 = 2 * 0.75 * 0.6 / 1.35 = 0.9 / 1.35 = 2/3; yes_ratio = 4 predicted yes / 10 = 0.4
    scores = binary_scores(predictions, labels)
    assert {k: scores[k] for k in ("tp", "fp", "tn", "fn")} == {"tp": 3, "fp": 1, "tn": 4, "fn": 2}
    assert scores["accuracy"] == pytest.approx(0.7)
    assert scores["precision"] == pytest.approx(0.75)
    assert scores["recall"] == pytest.approx(0.6)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["yes_ratio"] == pytest.approx(0.4)


def test_binary_scores_on_free_answers_and_zero_divisions():
    # yes_no reads: "No, it is not." -> no, "Yes" -> yes, "A cat." -> yes; labels as MME writes them
    scores = binary_scores([yes_no(t) for t in ["No, it is not.", "Yes", "A cat."]], ["Yes", " no", "no"])
    # tp 0, fp 2 (1, 2), fn 1 (0), tn 0: accuracy 0; precision 0/2 = 0; recall 0/1 = 0; f1 0 (p + r = 0)
    assert scores == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 2 / 3,
                      "tp": 0, "fp": 2, "tn": 0, "fn": 1}
    # nothing predicted yes: precision 0.0 (not 0/0); 2 of 3 labels no -> accuracy 2/3; recall 0/1
    scores = binary_scores(["no", "no", "no"], ["yes", "no", "no"])
    assert (scores["precision"], scores["recall"], scores["f1"], scores["yes_ratio"]) == (0.0, 0.0, 0.0, 0.0)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    # no label yes: recall 0.0 (not 0/0)
    assert binary_scores(["yes"], ["no"])["recall"] == 0.0
    empty = binary_scores([], [])
    assert all(math.isnan(empty[k]) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"))
    assert (empty["tp"], empty["fp"], empty["tn"], empty["fn"]) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        binary_scores(["yes", "no"], ["yes"])
    with pytest.raises(ValueError, match=r"predictions\[1\] is 'maybe'"):
        binary_scores(["yes", "maybe"], ["yes", "no"])


def test_mme_score_acc_plus():
    rows = [("existence", "1.jpg", True), ("count", "1.jpg", False), ("existence", "1.jpg", True),
            ("existence", "2.jpg", True), ("count", "3.jpg", True), ("existence", "2.jpg", False),
            ("count", "1.jpg", False), ("count", "3.jpg", True)]
    # existence: questions 3 of 4 right -> acc 75; images: 1.jpg both right, 2.jpg one wrong -> acc+ 1/2 = 50
    # count: questions 2 of 4 -> 50; images: 1.jpg (its own, not existence's) both wrong, 3.jpg both right -> 50
    # total = 125 + 100 = 225
    result = mme_score(rows)
    assert result == {"per_category": {"count": {"acc": 50.0, "acc_plus": 50.0, "score": 100.0},
                                       "existence": {"acc": 75.0, "acc_plus": 50.0, "score": 125.0}},
                      "total": 225.0}
    assert list(result["per_category"]) == ["count", "existence"]
    assert mme_score([]) == {"per_category": {}, "total": 0.0}


@pytest.mark.parametrize("text, expected", [
    ("B", 1), ("B.", 1), ("(B)", 1), ("B)", 1), ("B:", 1), ("Answer: B", 1), ("The answer is B.", 1),
    ("B. a cat", 1), ("(C) a dog", 2), ("D: the bird", 3), ("The correct answer is (D)", 3), ("A", 0),
    ("b", 1), ("(c)", 2), (" d. ", 3),  # lowercase: the whole answer only
    ("A cat", None), ("Bananas", None), ("", None), ("a cat", None), ("b) a cat", None), ("Answer: a cat", None),
    ("Answer: Blue", None),
    ("I like B", None),
    ("E", None), ("E. an egg", None),  # beyond the 4 options
])
def test_choice_letter(text, expected):
    assert choice_letter(text, 4) == expected


def test_choice_letter_bad_option_count():
    with pytest.raises(ValueError, match="num_options is 0"):
        choice_letter("A", 0)
    with pytest.raises(ValueError, match="num_options is 27"):
        choice_letter("A", 27)


def test_choice_from_text():
    options = ["Cat", "Dog", "Red car", "red"]
    assert choice_from_text("B", options) == 1                         # the letter wins
    assert choice_from_text("It is a dog.", options) == 1              # "dog" is the only option contained
    assert choice_from_text("A CAT", options) == 0                     # no letter ("A" + word); "cat" matches
    assert choice_from_text("a category", ["Cat", "Dog"]) is None      # whole words only
    assert choice_from_text("a cat and a dog", ["Cat", "Dog"]) is None  # two options contained
    assert choice_from_text("the red car", options) is None            # "red" and "red car" both contained
    assert choice_from_text("a bird", options) is None
    assert choice_from_text("a bird", ["", "bird"]) == 1              # an empty option never matches


def test_accuracy_by_category():
    # z: [F] -> 0.0; x: [T, F] -> 0.5; y: [T, T] -> 1.0; keys sorted
    result = accuracy_by_category([False, True, False, True, True], ["z", "x", "x", "y", "y"])
    assert result == {"x": 0.5, "y": 1.0, "z": 0.0}
    assert list(result) == ["x", "y", "z"]
    assert accuracy_by_category([], []) == {}
    with pytest.raises(ValueError, match="2 results but 1 categories"):
        accuracy_by_category([True, False], ["x"])


@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (5, 5, 15, 15), 1 / 7),   # inter 5 * 5 = 25; union 100 + 100 - 25 = 175
    ((0, 0, 10, 10), (0, 0, 5, 10), 0.5),      # inter 50; union 100
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),    # x1 exclusive: touching boxes share no pixel
    ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
    ((3, 3, 3, 3), (3, 3, 3, 3), 0.0),         # empty union
    ((5, 5, 0, 0), (0, 0, 5, 5), 0.0),         # x1 < x0: empty box; inter 0
])
def test_box_iou(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected, abs=1e-12)


def test_box_iou_bad_box():
    with pytest.raises(ValueError, match="box b has 3 numbers"):
        box_iou((0, 0, 1, 1), (0, 0, 1))


def test_grounding_scores_and_mean():
    # mean (1 + 0.5 + 0.49 + 0) / 4 = 1.99 / 4 = 0.4975; >= 0.5: 1.0 and 0.5 -> 2 / 4
    scores = grounding_scores([1.0, 0.5, 0.49, 0.0])
    assert scores["mean_iou"] == pytest.approx(0.4975)
    assert scores["iou_at_0.5"] == 0.5
    assert all(math.isnan(v) for v in grounding_scores([]).values())
    assert mean([1, 2, 4]) == pytest.approx(7 / 3)
    assert mean(x for x in (0.5, 1.5)) == 1.0
    assert math.isnan(mean([]))
