"""Labels coming back from people: resolve answers against a sample set, count what happened.

The file formats live beside this module (``labels_studio`` for Label Studio's JSON,
``labels_csv`` for CSV); each reads a file into :class:`Answer` values, and :func:`resolve`
decides, without I/O, what every answer does to the samples:

- APPLIED: an unlabelled sample gets the answered class;
- UNCHANGED: the sample already had exactly this label;
- CONFLICTING: the sample already has another label, or its annotators disagree (nothing is
  written: a person must decide);
- UNKNOWN: no sample has this id, or the class is not one of the data set's classes;
- UNANSWERED: the task has no answer (no annotation, or every annotation was cancelled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.data.samples import UNLABELLED, SampleSet


class LabelFormat(StrEnum):
    """The file formats of the label queue."""

    LABEL_STUDIO = "label-studio"
    CSV = "csv"


class Outcome(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    CONFLICTING = "conflicting"
    UNKNOWN = "unknown"
    UNANSWERED = "unanswered"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the people said about one sample: one class name per annotator (may be empty).

    ``where`` locates it in the file (``tasks.json: task 3``, ``labels.csv:7``) for messages.
    """

    where: str
    sample_id: str
    choices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LabelItem:
    """The outcome for one answer and why."""

    sample_id: str
    outcome: Outcome
    reason: str
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "outcome": self.outcome.value,
            "label": self.label,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class LabelImport:
    """Counts and per-item reasons of one label import; ``labels`` are the ones to write."""

    items: tuple[LabelItem, ...]
    labels: Mapping[str, int]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for item in self.items if item.outcome is outcome)

    @property
    def applied(self) -> int:
        return self.count(Outcome.APPLIED)

    @property
    def conflicting(self) -> int:
        return self.count(Outcome.CONFLICTING)

    @property
    def unknown(self) -> int:
        return self.count(Outcome.UNKNOWN)

    def counts(self) -> dict[str, int]:
        return {o.value: self.count(o) for o in Outcome}

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts(), "items": [item.to_dict() for item in self.items]}


def ground_truth_answers(labels: Mapping[str, str], source: str) -> list[Answer]:
    """Ground truth posted by request id (request id -> class name) as answers, so it joins
    captured samples through :func:`resolve` like a person's labels do."""
    return [Answer(f"{source}: request {rid}", rid, (name,)) for rid, name in labels.items()]


def resolve(answers: Sequence[Answer], samples: SampleSet) -> LabelImport:
    """Decide every answer against ``samples`` (pure: nothing is written)."""
    rows = samples.index()
    class_index = {name: i for i, name in enumerate(samples.classes)}
    items: list[LabelItem] = []
    labels: dict[str, int] = {}
    for answer in answers:
        item = _decide(answer, rows, class_index, samples, labels)
        if item.outcome is Outcome.APPLIED and item.label is not None:
            labels[answer.sample_id] = class_index[item.label]
        items.append(item)
    return LabelImport(tuple(items), labels)


def _decide(
    answer: Answer,
    rows: Mapping[str, int],
    class_index: Mapping[str, int],
    samples: SampleSet,
    pending: Mapping[str, int],
) -> LabelItem:
    sid = answer.sample_id
    if sid not in rows:
        return LabelItem(sid, Outcome.UNKNOWN, f"{answer.where}: no sample has id {sid!r}")
    distinct = sorted(set(answer.choices))
    if not distinct:
        return LabelItem(sid, Outcome.UNANSWERED, f"{answer.where}: no answer (or all cancelled)")
    if len(distinct) > 1:
        return LabelItem(
            sid, Outcome.CONFLICTING, f"{answer.where}: annotators disagree: {', '.join(distinct)}"
        )
    label = distinct[0]
    if label not in class_index:
        return LabelItem(
            sid,
            Outcome.UNKNOWN,
            f"{answer.where}: class {label!r} is not one of {', '.join(samples.classes)}",
            label,
        )
    current = pending.get(sid, int(samples.y[rows[sid]]))
    if current == class_index[label]:
        return LabelItem(
            sid, Outcome.UNCHANGED, f"{answer.where}: already labelled {label!r}", label
        )
    if current != UNLABELLED:
        had = samples.classes[current]
        return LabelItem(
            sid,
            Outcome.CONFLICTING,
            f"{answer.where}: already labelled {had!r}, not {label!r}",
            label,
        )
    return LabelItem(sid, Outcome.APPLIED, f"{answer.where}: labelled {label!r}", label)


def write_tasks(
    samples: SampleSet, path: Path, fmt: LabelFormat, *, only_unlabelled: bool = True
) -> int:
    """Write the label queue for ``samples`` to ``path`` in ``fmt``; return the task count."""
    if fmt is LabelFormat.CSV:
        from edgeloop.data.labels_csv import write_csv_tasks

        return write_csv_tasks(samples, path, only_unlabelled=only_unlabelled)
    from edgeloop.data.labels_studio import write_studio_tasks

    return write_studio_tasks(samples, path, only_unlabelled=only_unlabelled)


def read_answers(path: Path, fmt: LabelFormat | None = None) -> list[Answer]:
    """Read answers from ``path``; the format is taken from the suffix unless given.

    Raises:
        ConfigError: the suffix names no known format.
        NotFoundError / DataError: the file is missing or malformed (naming the line or task).
    """
    if fmt is None:
        fmt = _format_of(path)
    if fmt is LabelFormat.CSV:
        from edgeloop.data.labels_csv import read_csv_answers

        return read_csv_answers(path)
    from edgeloop.data.labels_studio import read_studio_answers

    return read_studio_answers(path)


def _format_of(path: Path) -> LabelFormat:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return LabelFormat.CSV
    if suffix == ".json":
        return LabelFormat.LABEL_STUDIO
    raise ConfigError(
        f"cannot tell the label format of {str(path)!r} from its suffix {suffix!r}",
        hint="use .json (Label Studio export) or .csv",
    )
