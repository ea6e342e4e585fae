"""Champion against challenger: both measured on the same two splits, one rule decides.

The two splits answer two questions. The recent hold-out (labelled samples from the field, never
trained on): does the challenger fix what drifted? The parent's original test split: does it
still do what the champion did? :func:`decide` is the rule, a pure function: promote only when
the challenger is better on the recent hold-out by more than ``min_recent_gain`` and loses at
most ``max_original_drop`` on the original split. The reason is written either way.

Accuracies are measured on the ONNX files (the champion's registered artifact, the challenger's
export), the form that is deployed, with ONNX Runtime on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Dataset


@dataclass(frozen=True, slots=True)
class Score:
    """One model's accuracy on one split (``correct`` of ``samples``)."""

    split: str
    samples: int
    correct: int

    def __post_init__(self) -> None:
        if self.samples < 1 or not 0 <= self.correct <= self.samples:
            raise ConfigError(
                f"score on {self.split!r}: {self.correct} correct of {self.samples} samples "
                "is not a valid count; a split to judge on needs at least one sample"
            )

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "samples": self.samples,
            "correct": self.correct,
            "accuracy": round(self.accuracy, 6),
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Champion and challenger, each on the recent hold-out and on the original test split."""

    champion_recent: Score
    challenger_recent: Score
    champion_original: Score
    challenger_original: Score

    @property
    def recent_gain(self) -> float:
        return self.challenger_recent.accuracy - self.champion_recent.accuracy

    @property
    def original_drop(self) -> float:
        return self.champion_original.accuracy - self.challenger_original.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": {
                "recent": self.champion_recent.to_dict(),
                "original": self.champion_original.to_dict(),
            },
            "challenger": {
                "recent": self.challenger_recent.to_dict(),
                "original": self.challenger_original.to_dict(),
            },
            "recent_gain": round(self.recent_gain, 6),
            "original_drop": round(self.original_drop, 6),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether the challenger is promoted, and why (always said)."""

    promote: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reason": self.reason}


def decide(c: Comparison, *, min_recent_gain: float, max_original_drop: float) -> Decision:
    """The promotion rule (see the module docstring); both conditions are checked and every
    failed one is named."""

    def pp(share: float) -> str:
        return f"{share * 100:+.2f} pp"

    recent = (
        f"recent hold-out {c.champion_recent.accuracy:.4f} -> {c.challenger_recent.accuracy:.4f}"
        f" ({pp(c.recent_gain)}, {c.challenger_recent.samples} samples)"
    )
    original = (
        f"original test {c.champion_original.accuracy:.4f} -> "
        f"{c.challenger_original.accuracy:.4f} ({pp(-c.original_drop)}, "
        f"{c.challenger_original.samples} samples)"
    )
    failed = []
    if not c.recent_gain > min_recent_gain:
        failed.append(f"not better on recent data by more than {pp(min_recent_gain)}: {recent}")
    # A tolerance of a millionth keeps "loses exactly 1 pp" on the allowed side of float rounding.
    if c.original_drop > max_original_drop + 1e-6:
        failed.append(f"loses more than {max_original_drop * 100:.2f} pp: {original}")
    if failed:
        return Decision(False, "refused: " + "; ".join(failed))
    return Decision(True, f"promoted: {recent}; {original}")


def score(onnx: Path, data: Dataset, split: str) -> Score:
    """Accuracy of the ONNX classifier at ``onnx`` on ``data`` (arg-max of the first output).

    Raises:
        ConfigError: ``data`` is empty.
    """
    from edgeloop.formats.parity import onnx_predictor

    if not len(data):
        raise ConfigError(f"the {split} split is empty: there is nothing to judge a model on")
    predict = onnx_predictor(onnx)
    correct = 0
    for start in range(0, len(data), 256):
        logits = predict(np.ascontiguousarray(data.x[start : start + 256], dtype=np.float32))
        correct += int(np.count_nonzero(logits.argmax(axis=1) == data.y[start : start + 256]))
    return Score(split, len(data), correct)


def compare(champion: Path, challenger: Path, recent: Dataset, original: Dataset) -> Comparison:
    """Both models on both splits (see :func:`score`)."""
    r, o = f"recent hold-out ({recent.name})", f"original test ({original.name})"
    return Comparison(
        champion_recent=score(champion, recent, r),
        challenger_recent=score(challenger, recent, r),
        champion_original=score(champion, original, o),
        challenger_original=score(challenger, original, o),
    )
