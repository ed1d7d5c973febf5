"""The evaluation tasks: how an item becomes a prompt, what the model's answer is turned into (one JSON
prediction per item), and the metrics computed from the predictions and the items' gold answers.

Prompts: the SEED-X paper does not publish its evaluation prompts, so the question goes into the
checkpoint's own chat template (`[INST] {images}{question} [/INST]\\n` for SEED-X-I, as the official
eval_img2text_seed_x_i.py does) after a task instruction, LLaVA-1.5's evaluation instructions for the
comprehension benchmarks (the convention MLLM papers report with). Each task's template is a setting
(`--template`); a data source may set its own (the shapes world asks its questions bare, as trained).
"""
from __future__ import annotations

import dataclasses
import string
from typing import TYPE_CHECKING

from seedx_jax.agent.prompts import PromptError
from seedx_jax.diffusion.sampling import RenderSettings
from seedx_jax.evaluation import metrics as M
from seedx_jax.evaluation.files import LETTERS
from seedx_jax.evaluation.items import Item
from seedx_jax.evaluation.likelihood import option_scores
from seedx_jax.vision.image_io import ImageInputError

if TYPE_CHECKING:
    from seedx_jax.pipelines import SeedX


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a prediction depends on besides the model and the item (kept in the run's manifest: a
    resumed run must use the same)."""

    template: str
    max_new_tokens: int
    grids: tuple[str, ...]
    batch_size: int  # items per chunk: one render batch, the unit of resumption
    decode_batch_size: int = 0  # LLM rows per decode call (0: batch_size); batch shapes move last bits
    likelihood_template: str = "{question}"  # mc: the prompt each option's text is scored after
    render: RenderSettings = RenderSettings()  # drawing tasks: sampler, size; its seed seeds the noise


class Task:
    """One task: `name`, the field its template fills, its default template and answer length."""

    name = ""
    field = "question"
    template = "{question}"
    max_new_tokens = 32
    grounding = False
    recorded = ("answer",)  # the fields of a complete prediction (an incomplete line is predicted again)

    def complete(self, record: dict) -> bool:
        return "problem" in record or all(k in record for k in self.recorded)

    def check_template(self, template: str) -> str:
        """Raises ValueError: the template lacks this task's field or names another."""
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        allowed = {self.field, "options"} if self.name == "mc" else {self.field}
        if self.field not in names or names - allowed:
            raise ValueError(f"template {template!r} must hold {{{self.field}}}"
                             + (" (and may hold {options})" if self.name == "mc" else "")
                             + (f", not {{{sorted(names - allowed)[0]}}}" if names - allowed else ""))
        return template

    def prompt(self, item: Item, template: str) -> str:
        return template.format(**{self.field: item.text})

    def predict(self, pipe: SeedX, items: list[Item], settings: Settings, ctx: "RunContext") -> list[dict]:
        raise NotImplementedError

    def score(self, items: dict[str, Item], predictions: list[dict]) -> dict:
        raise NotImplementedError


def problem_reason(err: Exception) -> str:
    """A refused image or prompt as a skip reason, grouped by kind in the metrics JSON."""
    kind = "image does not decode" if isinstance(err, ImageInputError) else "prompt refused"
    return f"{kind} ({err})"


@dataclasses.dataclass
class RunContext:
    """What a chunk's predictions need besides the items: the output folder (images), the position of
    the chunk's first item among all items (its render seed) and each item's ordinal in the source."""

    out: str
    start: int
    ordinals: dict[str, int]


def _chat_turns(pipe: SeedX, task: Task, items: list[Item], settings: Settings):
    """(prepared turns, prediction stubs): an item whose image or prompt is refused gets a `problem`."""
    turns, stubs = [], []
    for item in items:
        try:
            images = [item.image(k) for k in range(len(item.images))]
            turn = pipe.prepare_chat(task.prompt(item, settings.template), images, grounding=task.grounding,
                                     max_new_tokens=settings.max_new_tokens, grids=settings.grids)
        except (PromptError, ImageInputError) as err:
            stubs.append({"id": item.id, "problem": problem_reason(err)})
            continue
        turns.append(turn)
        stubs.append({"id": item.id})
    return turns, stubs


def _answered(pipe: SeedX, task: Task, items: list[Item], settings: Settings, stage: str):
    """(prediction stubs, the answers of the items that have no problem, in order)."""
    turns, stubs = _chat_turns(pipe, task, items, settings)
    answers = pipe.answer_batch(turns, max_new_tokens=settings.max_new_tokens, seed=settings.render.seed, stage=stage,
                                batch_size=settings.decode_batch_size or settings.batch_size) if turns else []
    return stubs, iter(answers)


def _empty(items: dict[str, Item], predictions: list[dict], how: str = "scored as wrong") -> dict:
    empty = [f"{items[p['id']].location}: empty answer ({how})" for p in predictions
             if not str(p.get("answer", "")).strip()]
    return {"count": len(empty), "records": empty[:200]}


def _by_category(values: list[float], items: list[Item]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for value, item in zip(values, items):
        if item.category:
            groups.setdefault(item.category, []).append(value)
    return {c: M.mean(v) for c, v in sorted(groups.items())}


class VQA(Task):
    name, template, max_new_tokens = "vqa", "{question}\nAnswer the question using a single word or phrase.", 32

    def predict(self, pipe, items, settings, ctx):
        stubs, answers = _answered(pipe, self, items, settings, "answering")
        return [s if "problem" in s else dict(s, answer=next(answers).text) for s in stubs]

    def accuracy(self, item: Item, answer: str) -> float:
        """Exact match where the source says so (GQA, the shapes world); VQAv2's soft accuracy over 3 or more
        annotators' answers; with fewer (one gold answer), 1 when the answer equals one of them after VQAv2's
        normalisation (the soft rule needs 3 matching annotators for full credit)."""
        if item.meta.get("match") == "exact":
            return float(M.exact_match(answer, item.answers[0]))
        if len(item.answers) < 3:
            said = M.normalize_vqa_answer(answer)
            return float(any(said == M.normalize_vqa_answer(gold) for gold in item.answers))
        return M.vqa_soft_accuracy(answer, item.answers)

    def score(self, items, predictions):
        scored = [items[p["id"]] for p in predictions]
        values = [self.accuracy(item, p["answer"]) for item, p in zip(scored, predictions)]
        return {"accuracy": M.mean(values), "per_category": _by_category(values, scored),
                "empty_answers": _empty(items, predictions)}


class YesNo(Task):
    name, template, max_new_tokens = "yesno", "{question}\nAnswer the question using a single word or phrase.", 8

    def predict(self, pipe, items, settings, ctx):
        stubs, answers = _answered(pipe, self, items, settings, "answering")
        return [s if "problem" in s else dict(s, answer=next(answers).text) for s in stubs]

    def score(self, items, predictions):
        scored = [items[p["id"]] for p in predictions]
        said = [M.yes_no(p["answer"]) for p in predictions]
        labels = [item.answers[0] for item in scored]
        out = M.binary_scores(said, labels)
        groups: dict[str, list[int]] = {}
        for k, item in enumerate(scored):
            groups.setdefault(item.category or "all", []).append(k)
        out["per_category"] = {c: M.binary_scores([said[k] for k in ks], [labels[k] for k in ks])
                               for c, ks in sorted(groups.items())}
        out["mme"] = M.mme_score([(item.category or "all", item.meta.get("image_key", item.id), s == label)
                                  for item, s, label in zip(scored, said, labels)])
        out["empty_answers"] = _empty(items, predictions, "POPE's rule: read as yes")
        return out


class MultipleChoice(Task):
    """SEED-Bench style: the option the model's likelihood prefers (SEED-Bench's own rule) and the option
    its generated answer names (its first letter, else the one option it quotes)."""

    name, max_new_tokens = "mc", 16
    recorded = ("answer", "generated_choice", "likelihood_choice")
    template = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."

    def prompt(self, item: Item, template: str) -> str:
        options = "\n".join(f"{LETTERS[k]}. {o}" for k, o in enumerate(item.options))
        return template.format(question=item.text, options=options)

    def predict(self, pipe, items, settings, ctx):
        stubs, answers = _answered(pipe, self, items, settings, "answering")
        rows = max(len(item.options) for item in items)
        out = []
        for item, stub in zip(items, stubs):
            if "problem" in stub:
                out.append(stub)
                continue
            text = next(answers).text
            question = settings.likelihood_template.format(question=item.text)
            turn = pipe.prepare_chat(question, [item.image(k) for k in range(len(item.images))],
                                     max_new_tokens=1, grids=settings.grids)
            scores = option_scores(pipe, turn, item.options, rows=rows)
            out.append(dict(stub, answer=text, generated_choice=M.choice_from_text(text, item.options),
                            likelihood_choice=max(range(len(scores)), key=scores.__getitem__), option_scores=scores))
        return out

    def score(self, items, predictions):
        scored = [items[p["id"]] for p in predictions]
        gold = [LETTERS.index(item.answers[0]) for item in scored]
        by_likelihood = [float(p["likelihood_choice"] == g) for p, g in zip(predictions, gold)]
        by_generation = [float(p["generated_choice"] == g) for p, g in zip(predictions, gold)]
        return {"accuracy_likelihood": M.mean(by_likelihood), "accuracy_generation": M.mean(by_generation),
                "per_category_likelihood": _by_category(by_likelihood, scored),
                "per_category_generation": _by_category(by_generation, scored),
                "unparsed_generations": sum(p["generated_choice"] is None for p in predictions),
                "empty_answers": _empty(items, predictions)}


class Grounding(Task):
    """RefCOCO style: the first box of the answer against the gold box; IoU >= 0.5 is a hit."""

    name, field, template, max_new_tokens, grounding = "grounding", "expression", "{expression}", 32, True
    recorded = ("answer", "box")

    def predict(self, pipe, items, settings, ctx):
        stubs, answers = _answered(pipe, self, items, settings, "grounding")
        out = []
        for stub in stubs:
            if "problem" not in stub:
                turn = next(answers)
                stub = dict(stub, answer=turn.raw_text, box=list(turn.boxes[0]) if turn.boxes else None)
            out.append(stub)
        return out

    def score(self, items, predictions):
        scored = [items[p["id"]] for p in predictions]
        ious = [M.box_iou(p["box"], item.box) if p["box"] else 0.0 for p, item in zip(predictions, scored)]
        out = M.grounding_scores(ious)
        out["per_category"] = _by_category([float(i >= 0.5) for i in ious], scored)  # accuracy at IoU >= 0.5
        out["no_box"] = sum(p["box"] is None for p in predictions)
        return out


def text_tasks() -> dict[str, Task]:
    return {t.name: t for t in (MultipleChoice(), YesNo(), VQA(), Grounding())}
