"""The retrain stage's figures, pure: accuracies before and after, and how much came back.

The *recovered share* is what the shift cost the champion on the test split that the challenger
won back: ``(after_shifted - before_shifted) / (before_original - before_shifted)``. The *loss on
the original split* is ``before_original - after_original`` (positive: the challenger is worse
on the split as it is). Both are checked against the goals of issue 13 (>= 90 % recovered,
<= 1 pp lost); a goal that cannot be judged (the shift cost nothing) says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeloop.core.errors import ConfigError

RECOVER_GOAL = 0.90
MAX_ORIGINAL_LOSS = 0.01


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Correct answers of the served version on the test split as it is and shifted."""

    version: str
    original: int
    shifted: int
    samples: int
    split: str

    def __post_init__(self) -> None:
        if (
            self.samples <= 0
            or not (0 <= self.original <= self.samples)
            or not (0 <= self.shifted <= self.samples)
        ):
            raise ConfigError(
                f"accuracy counts original={self.original}, shifted={self.shifted} of "
                f"{self.samples} samples: expected 0 <= correct <= samples and samples > 0"
            )

    @property
    def original_accuracy(self) -> float:
        return self.original / self.samples

    @property
    def shifted_accuracy(self) -> float:
        return self.shifted / self.samples

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "split": f"{self.split} ({self.samples} samples)",
            "original": round(self.original_accuracy, 4),
            "shifted": round(self.shifted_accuracy, 4),
            "correct": {"original": self.original, "shifted": self.shifted},
        }


def recovery(
    before: Accuracy, after: Accuracy, *, recover_goal: float = RECOVER_GOAL
) -> dict[str, Any]:
    """The shift's cost, the share of it recovered, the loss on the original split, the goals
    (``recover_goal``: the central job's 0.90 unless given; the on-device run's is 0.80).

    Raises:
        ConfigError: the two were measured on different numbers of samples.
    """
    if before.samples != after.samples:
        raise ConfigError(
            f"before ({before.samples} samples) and after ({after.samples}) were measured on "
            "different splits; expected the same test split twice"
        )
    cost = before.original_accuracy - before.shifted_accuracy
    won = after.shifted_accuracy - before.shifted_accuracy
    loss = before.original_accuracy - after.original_accuracy
    share = None if cost <= 0 else won / cost
    return {
        "shift_cost_pp": round(100 * cost, 2),
        "won_back_pp": round(100 * won, 2),
        "recovered_share": None if share is None else round(share, 4),
        "recovered_share_note": "the shift cost nothing, so there is nothing to recover"
        if share is None
        else "(after shifted - before shifted) / (before original - before shifted)",
        "original_loss_pp": round(100 * loss, 2),
        "goals": {
            f"recovered_share >= {recover_goal:.2f}": None
            if share is None
            else share >= recover_goal,
            "original_loss_pp <= 1": loss <= MAX_ORIGINAL_LOSS + 1e-12,
        },
    }
