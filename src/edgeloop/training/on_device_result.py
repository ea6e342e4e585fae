"""The values of on-device incremental training: its config and its measured result."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgeloop.core.errors import ConfigError

_EPS = 1e-9  # accuracies are ratios of counts: compare points with room for float rounding
_LINEAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*\+[A-Za-z0-9][A-Za-z0-9._-]*\.[0-9]+$")


def _int(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name} {value!r} is not valid; expected an integer >= {least}")


def _share(name: str, value: float, *, low_open: bool) -> None:
    ok = math.isfinite(value) and (value > 0.0 if low_open else value >= 0.0) and value < 1.0
    if not ok:
        bound = "0 <" if low_open else "0 <="
        raise ConfigError(f"{name} {value} is not valid; expected {bound} {name} < 1")


@dataclass(frozen=True, slots=True)
class IncrementalConfig:
    """How one incremental run trains and when its result is accepted.

    ``replay_share`` of every batch comes from the replay buffer (earlier local samples) when it
    holds any; ``replay_size`` bounds the buffer (0 = no replay, nothing kept). With
    ``train_last_layers`` N only the last N layers that own parameters learn (frozen layers'
    BatchNorm statistics stay fixed too), which cuts the optimizer state and gradients for small
    memory. ``holdout_share`` of the new data is never trained on: accuracy on the new data is
    measured there. The run is rejected when accuracy on the old data drops by more than
    ``max_forgetting_pp`` points, or when accuracy on the new held-out data rises by less than
    ``min_gain_pp`` points (the default 0 refuses a model worse on the new data; raise it to
    demand a gain). ``max_seconds`` stops training (between batches) when spent;
    ``threads`` is torch's intra-op thread count for the run. ``keep_norm_stats`` keeps every
    BatchNorm layer's running statistics as they were (the usual practice when fine-tuning on a
    few samples: batches of 32 give noisy statistics, and statistics pulled towards the new
    data cost accuracy on the old; measured in docs/on_device.md).

    Raises:
        ConfigError: a value out of range, naming it and the allowed range.
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    replay_size: int = 500
    replay_share: float = 0.5
    train_last_layers: int | None = None
    max_forgetting_pp: float = 1.0
    min_gain_pp: float = 0.0
    holdout_share: float = 0.25
    seed: int = 0
    threads: int = 1
    max_seconds: float | None = None
    keep_norm_stats: bool = True

    def __post_init__(self) -> None:
        _int("epochs", self.epochs, 1)
        _int("batch_size", self.batch_size, 2)
        _int("replay_size", self.replay_size, 0)
        _int("seed", self.seed, 0)
        _int("threads", self.threads, 1)
        if not isinstance(self.keep_norm_stats, bool):
            raise ConfigError(
                f"keep_norm_stats {self.keep_norm_stats!r} is not valid; expected a bool"
            )
        if self.train_last_layers is not None:
            _int("train_last_layers", self.train_last_layers, 1)
        if not (math.isfinite(self.lr) and 0.0 < self.lr <= 10.0):
            raise ConfigError(
                f"learning rate {self.lr} is not valid; expected 0 < lr <= 10",
                hint="fine-tuning wants a small lr: 1e-4..3e-3 with adam",
            )
        _share("replay_share", self.replay_share, low_open=False)
        _share("holdout_share", self.holdout_share, low_open=True)
        for name in ("max_forgetting_pp", "min_gain_pp"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -100.0 <= value <= 100.0):
                raise ConfigError(f"{name} {value} is not valid; expected -100..100 points")
        if self.max_seconds is not None and not (
            math.isfinite(self.max_seconds) and self.max_seconds > 0
        ):
            raise ConfigError(f"max_seconds {self.max_seconds} is not valid; expected > 0 or None")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Rejection(StrEnum):
    """Why a run's model was not accepted."""

    FORGETTING = "forgetting"  # old-data accuracy fell by more than max_forgetting_pp
    NO_GAIN = "no_gain"  # new-data accuracy did not rise by min_gain_pp
    DIVERGED = "diverged"  # the loss became NaN or infinite
    NO_OLD_DATA = "no_old_data"  # neither old data nor a replay buffer to check forgetting on


def lineage_label(parent_ref: str, node_id: str, counter: int) -> str:
    """``digits-cnn:3`` + ``node-2`` + 1 -> ``digits-cnn:3+node-2.1``.

    Raises:
        ConfigError: a part that would make the label ambiguous.
    """
    label = f"{parent_ref}+{node_id}.{counter}"
    if isinstance(counter, bool) or counter < 1 or not _LINEAGE.match(label):
        raise ConfigError(
            f"lineage {label!r} is not valid; expected PARENT+NODE.COUNTER with a ref like "
            "'digits-cnn:3', a node id of letters, digits, '.', '_', '-' and a counter >= 1",
        )
    return label


@dataclass(frozen=True, slots=True)
class IncrementalResult:
    """What one run measured and decided. Accuracies are fractions in [0, 1].

    ``new_*`` are measured on the held-out part of the new data, ``old_*`` on the old data (the
    given original test split, or the replay buffer's held-out slice; None with ``old_note``
    when there was none). ``peak_rss_mb`` is the peak resident memory of the process that ran
    the training (the worker's own when run by ``on_device_worker``), over the whole run;
    ``train_peak_rss_mb`` the same peak read before the checkpoint and ONNX export were
    written (torch's exporter needs more memory than the training). ``output`` / ``onnx``
    are the written checkpoint folder and ONNX file, None when the run was rejected.
    ``replay_buffer_size`` is the buffer's size after the new samples joined it;
    ``replay_samples_used`` counts replayed draws over all batches (with repeats).
    """

    accepted: bool
    rejection: Rejection | None
    reason: str
    lineage: str
    new_accuracy_before: float
    new_accuracy_after: float
    old_accuracy_before: float | None
    old_accuracy_after: float | None
    old_source: str
    new_train_samples: int
    new_holdout_samples: int
    old_samples: int
    replay_samples_used: int
    replay_buffer_size: int
    epochs_run: int
    budget_exhausted: bool
    wall_seconds: float
    peak_rss_mb: float | None
    train_peak_rss_mb: float | None
    trainable_parameters: int
    total_parameters: int
    threads: int
    output: str | None = None
    onnx: str | None = None
    onnx_max_abs_diff: float | None = None

    def __post_init__(self) -> None:
        if self.accepted != (self.rejection is None):
            raise ConfigError(f"accepted={self.accepted} contradicts rejection {self.rejection}")

    @property
    def accuracy_before(self) -> float:
        """The SDK's figure: accuracy on the new data's held-out part before training."""
        return self.new_accuracy_before

    @property
    def accuracy_after(self) -> float:
        return self.new_accuracy_after

    @property
    def forgetting_pp(self) -> float | None:
        """Points of old-data accuracy lost (negative: gained); None without old data."""
        if self.old_accuracy_before is None or self.old_accuracy_after is None:
            return None
        return 100.0 * (self.old_accuracy_before - self.old_accuracy_after)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["rejection"] = None if self.rejection is None else self.rejection.value
        out["forgetting_pp"] = self.forgetting_pp
        out["accuracy_before"] = self.accuracy_before
        out["accuracy_after"] = self.accuracy_after
        return out


def decide(
    cfg: IncrementalConfig,
    diverged: bool,
    new_before: float,
    new_after: float,
    old_before: float | None,
    old_after: float | None,
) -> tuple[Rejection | None, str]:
    """Accept (None) or the rejection and its reason, from accuracies before and after on the
    new data's hold-out and on the old data (fractions)."""
    gain = 100.0 * (new_after - new_before)
    if diverged:
        return Rejection.DIVERGED, f"the loss became NaN or infinite with lr {cfg.lr}"
    if old_before is None or old_after is None:
        return Rejection.NO_OLD_DATA, (
            "no old data to check forgetting on: pass the original test split or a replay "
            "buffer that holds earlier samples"
        )
    lost = 100.0 * (old_before - old_after)
    if lost > cfg.max_forgetting_pp + _EPS:
        return Rejection.FORGETTING, (
            f"old-data accuracy fell {lost:.2f} pp ({old_before:.4f} -> {old_after:.4f}); "
            f"at most {cfg.max_forgetting_pp} pp allowed"
        )
    if gain < cfg.min_gain_pp - _EPS:
        return Rejection.NO_GAIN, (
            f"new-data accuracy moved {gain:+.2f} pp ({new_before:.4f} -> {new_after:.4f}); "
            f"at least {cfg.min_gain_pp:+} pp wanted"
        )
    return None, f"accepted: new data {gain:+.2f} pp, old data {-lost:+.2f} pp"
