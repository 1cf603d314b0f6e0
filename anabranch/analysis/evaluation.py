"""Sentiment backends measured against human labels, so that a user can choose by figures.

`anabranch eval` runs each backend asked for over a labelled file and reports, side by side:
agreement with the human label and its 95 % bootstrap interval, per-class precision, recall and
F1, the confusion matrix, outputs that failed, tokens used and time. A failed output counts as a
disagreement: a backend that often fails cannot look good by leaving out what it failed on.

A line carries a `label` (positive, negative, neutral) or a numeric `human_mean` (a rating
averaged over raters, negative to positive): a mean is kept when it lies at least `band` away from
zero, labelled by its sign, so that texts the raters themselves found near neutral do not decide
the figures. The project ships its own set (`anabranch/data/sentiment_eval.jsonl`), split into a
`tune` part, for trying prompts and settings on, and a `held-out` part, for reporting.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anabranch.analysis.backends import sentiment_agent
from anabranch.analysis.outputs import SentimentOutput
from anabranch.graphs.fanout import build_fanout_graph
from anabranch.graphs.progress import Display
from anabranch.graphs.runner import run_batch
from anabranch.llm.endpoint import Endpoint
from anabranch.tools.sentiment import SentimentLabel
from anabranch.types import Task, Usage

LABELS: tuple[SentimentLabel, ...] = ("positive", "negative", "neutral")
FAILED = "failed"
"""The confusion matrix's column for outputs that did not come."""
_ROUNDS = 2000
"""Bootstrap resamples for the agreement's interval."""


def builtin_set() -> Path:
    """The project's own labelled set: 301 short texts in five domains (see docs)."""
    return Path(__file__).parents[1] / "data" / "sentiment_eval.jsonl"


class LabelledLine(BaseModel):
    """One line of a labelled file."""

    model_config = ConfigDict(extra="ignore")

    id: str
    """Unique within the file."""
    text: str
    """The text to classify."""
    label: SentimentLabel | None = None
    """The human label."""
    human_mean: float | None = None
    """Or the raters' mean rating, negative to positive (labelled by sign outside the band)."""
    split: str | None = None
    """`tune` or `held-out` in the project's set."""


@dataclass(frozen=True, slots=True)
class Labelled:
    """A text and the label it is measured against."""

    id: str
    """The line's id."""
    text: str
    """The text."""
    label: SentimentLabel
    """The human label, decided."""


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """What a labelled file held: the texts measured, and what was left out and why."""

    items: list[Labelled]
    """The texts measured."""
    problems: list[str]
    """Malformed lines, each named by its line number."""
    in_band: int
    """Texts whose mean lay inside the band (too close to neutral to call)."""
    other_split: int
    """Texts of another split than the one asked for."""


def read_labelled(path: Path, *, band: float = 1.0, split: str | None = None) -> LabelledSet:
    """The texts of a labelled JSONL file; a bad line is reported by number and skipped."""
    items: list[Labelled] = []
    problems: list[str] = []
    in_band = other_split = 0
    seen: set[str] = set()
    with path.open(encoding="utf-8-sig") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                line = LabelledLine.model_validate_json(raw)
            except ValidationError as exc:
                problems.append(f"line {number}: {exc.errors()[0]['msg']}")
                continue
            if line.id in seen:
                problems.append(f"line {number}: id {line.id!r} appeared before")
                continue
            seen.add(line.id)
            if split is not None and line.split != split:
                other_split += 1
                continue
            if line.label is not None:
                items.append(Labelled(line.id, line.text, line.label))
            elif line.human_mean is None:
                problems.append(f"line {number}: neither a label nor a human_mean")
            elif abs(line.human_mean) < band:
                in_band += 1
            else:
                label: SentimentLabel = "positive" if line.human_mean > 0 else "negative"
                items.append(Labelled(line.id, line.text, label))
    return LabelledSet(items, problems, in_band, other_split)


class ClassFigures(BaseModel):
    """How one label fared."""

    precision: float
    """Of the texts given this label, the share the humans gave it too."""
    recall: float
    """Of the texts the humans gave this label, the share given it."""
    f1: float
    """The harmonic mean of the two."""
    support: int
    """Texts the humans gave this label."""


class BackendFigures(BaseModel):
    """One backend over one labelled set."""

    backend: str
    """The backend's name (`local`, `llm`, ...)."""
    texts: int
    """Texts measured."""
    agreement: float
    """Share of texts given the human label (failed outputs count as disagreeing)."""
    interval: tuple[float, float]
    """The agreement's 95 % bootstrap interval."""
    classes: dict[str, ClassFigures]
    """Per human label."""
    confusion: dict[str, dict[str, int]] = Field(default_factory=dict)
    """Texts by human label (rows), then by the label given, `failed` included."""
    failed: int
    """Texts whose analysis failed (no label came back)."""
    usage: Usage
    """LLM requests and tokens spent."""
    seconds: float
    """Wall time."""


async def evaluate(
    items: list[Labelled],
    backend: str,
    endpoint: Endpoint | None = None,
    *,
    concurrency: int = 16,
    progress: bool | None = None,
) -> BackendFigures:
    """Run one sentiment backend over the texts (as `anabranch run` would) and score it."""
    graph = build_fanout_graph([sentiment_agent(backend, endpoint)])
    tasks = [Task(id=item.id, text=item.text) for item in items]
    given: dict[str, str] = {}
    start = time.perf_counter()
    batch = run_batch(tasks, graph, concurrency=concurrency, display=Display(progress))
    async for result in batch:
        ok = result.status == "ok" and isinstance(result.outputs.get("sentiment"), dict)
        given[result.task_id] = result.output("sentiment", SentimentOutput).label if ok else FAILED
    seconds = time.perf_counter() - start
    gold: list[str] = [item.label for item in items]
    return score(backend, gold, [given[item.id] for item in items], batch.report.usage, seconds)


def score(
    backend: str, gold: list[str], given: list[str], usage: Usage, seconds: float
) -> BackendFigures:
    """The figures for labels `given` against the `gold` ones."""
    correct = [g == p for g, p in zip(gold, given, strict=True)]
    pairs = Counter(zip(gold, given, strict=True))
    classes: dict[str, ClassFigures] = {}
    for label in LABELS:
        support = sum(1 for g in gold if g == label)
        predicted = sum(1 for p in given if p == label)
        hits = pairs[(label, label)]
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes[label] = ClassFigures(precision=precision, recall=recall, f1=f1, support=support)
    confusion: dict[str, dict[str, int]] = {
        g: {p: pairs[(g, p)] for p in (*LABELS, FAILED)} for g in LABELS if g in set(gold)
    }
    return BackendFigures(
        backend=backend,
        texts=len(gold),
        agreement=sum(correct) / len(correct) if correct else 0.0,
        interval=bootstrap(correct),
        classes=classes,
        confusion=confusion,
        failed=sum(1 for p in given if p == FAILED),
        usage=usage,
        seconds=seconds,
    )


def bootstrap(correct: list[bool], rounds: int = _ROUNDS, seed: int = 0) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the agreement over resamples with replacement."""
    if not correct:
        return (0.0, 0.0)
    draw = random.Random(seed)
    n = len(correct)
    shares = sorted(sum(draw.choices(correct, k=n)) / n for _ in range(rounds))
    return (shares[int(0.025 * rounds)], shares[int(0.975 * rounds) - 1])


def render(figures: list[BackendFigures], title: str) -> str:
    """The figures side by side, as text."""
    table: list[tuple[str, list[str]]] = [
        ("texts", [str(f.texts) for f in figures]),
        ("agreement", [f"{f.agreement:.1%}" for f in figures]),
        ("  95% interval", [f"{f.interval[0]:.1%}-{f.interval[1]:.1%}" for f in figures]),
    ]
    for label in LABELS:
        if any(f.classes[label].support for f in figures):
            table.append((f"{label} P/R/F1", [_prf(f, label) for f in figures]))
    table += [
        ("failed outputs", [str(f.failed) for f in figures]),
        ("LLM requests", [str(f.usage.requests) for f in figures]),
        (
            "tokens in/out",
            [f"{f.usage.prompt_tokens}/{f.usage.completion_tokens}" for f in figures],
        ),
        ("seconds", [f"{f.seconds:.1f}" for f in figures]),
    ]
    width = 2 + max(len(cell) for _, cells in table for cell in cells)
    width = max(width, *(len(f.backend) + 2 for f in figures))
    rows = [title, "".ljust(18) + "".join(f.backend.rjust(width) for f in figures)]
    rows += [name.ljust(18) + "".join(c.rjust(width) for c in cells) for name, cells in table]
    for f in figures:
        rows.append(f"confusion, {f.backend} (rows: human; columns: {', '.join(LABELS)}, failed)")
        for gold, counts in f.confusion.items():
            rows.append(f"  {gold:9s}" + "".join(f"{n:6d}" for n in counts.values()))
    return "\n".join(rows)


def _prf(figures: BackendFigures, label: str) -> str:
    c = figures.classes[label]
    return f"{c.precision:.2f}/{c.recall:.2f}/{c.f1:.2f}"


def write_figures(path: Path, figures: list[BackendFigures], source: str, split: str | None,
                  band: float) -> None:  # fmt: skip
    """The figures as JSON, with what they were measured on."""
    document: dict[str, object] = {
        "labelled": source,
        "split": split,
        "band": band,
        "backends": [f.model_dump(mode="json") for f in figures],
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
