"""What a retraining job is asked to do: a frozen, validated spec stored with its job record.

The spec travels as JSON (the job row's ``spec`` column): the CLI or the control plane writes it,
the job's own process reads it back. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef
from edgeloop.registry.datasets import DatasetRef

KIND = "retrain"


class Trigger(StrEnum):
    """Why a job was started; recorded in the new version's lineage."""

    MANUAL = "manual"
    DRIFT_ALERT = "drift-alert"
    ACCURACY_FLOOR = "accuracy-floor"
    SCHEDULE = "schedule"


class Init(StrEnum):
    """Where training starts: the champion's weights (fine-tune) or a fresh initialisation."""

    CHAMPION = "champion"
    SCRATCH = "scratch"


def _enum(kind: type[StrEnum], value: object, what: str) -> Any:
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(k.value for k in kind)
        raise ConfigError(f"{what} {value!r} is not known; expected one of {allowed}") from None


@dataclass(frozen=True, slots=True)
class RetrainSpec:
    """A retraining job's parameters.

    ``model`` is the champion (``name`` means its latest version, pinned when the job starts);
    ``data`` the stored data set versions of recent labelled samples. ``holdout`` is the share
    of each recent set kept out of training to compare champion and challenger on;
    ``max_original_drop`` the accuracy the challenger may lose on the parent's original test
    split (0.01 = 1 pp); ``min_recent_gain`` what it must gain on the recent hold-out (strictly
    more than this). ``recent_repeat`` repeats the recent training samples in the mix (0: chosen
    so they are about a quarter of it). ``epochs`` None keeps the parent's recipe.
    """

    model: ModelRef
    data: tuple[DatasetRef, ...]
    init: Init = Init.CHAMPION
    checkpoint: str | None = None
    epochs: int | None = None
    holdout: float = 0.3
    max_original_drop: float = 0.01
    min_recent_gain: float = 0.0
    recent_repeat: int = 0
    trigger: Trigger = Trigger.MANUAL
    seed: int = 0
    optimize: bool = True
    bench_runs: int = 100
    work_dir: str = ""

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError(
                "a retraining job needs at least one data set of recent labelled samples",
                hint="pass --data NAME:VERSION (see `edgeloop data list`)",
            )
        if not 0.05 <= self.holdout <= 0.9:
            raise ConfigError(
                f"holdout {self.holdout} is out of range; expected 0.05..0.9",
                hint="0.3 keeps 30 % of the recent samples to judge the challenger on",
            )
        for name in ("max_original_drop", "min_recent_gain"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -1.0 <= value <= 1.0):
                raise ConfigError(f"{name} {value} is out of range; expected a share in -1..1")
        if self.epochs is not None and not 1 <= self.epochs <= 10_000:
            raise ConfigError(f"epochs {self.epochs} is out of range; expected 1..10000")
        if not 0 <= self.recent_repeat <= 100 or self.seed < 0 or self.bench_runs < 1:
            raise ConfigError(
                f"recent_repeat {self.recent_repeat} (0..100), seed {self.seed} (>= 0) or "
                f"bench_runs {self.bench_runs} (>= 1) is out of range"
            )
        if self.init is Init.SCRATCH and self.checkpoint is not None:
            raise ConfigError(
                "a checkpoint to warm-start from was given with init 'scratch'",
                hint="drop --checkpoint, or drop --from-scratch",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "data": [str(d) for d in self.data],
            "init": self.init.value,
            "checkpoint": self.checkpoint,
            "epochs": self.epochs,
            "holdout": self.holdout,
            "max_original_drop": self.max_original_drop,
            "min_recent_gain": self.min_recent_gain,
            "recent_repeat": self.recent_repeat,
            "trigger": self.trigger.value,
            "seed": self.seed,
            "optimize": self.optimize,
            "bench_runs": self.bench_runs,
            "work_dir": self.work_dir,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RetrainSpec:
        """Raises ConfigError naming a missing or bad field."""
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(d) - known):
            raise ConfigError(
                f"retrain spec fields {unknown} are not known; expected some of {sorted(known)}"
            )
        if "model" not in d or "data" not in d:
            raise ConfigError("a retrain spec needs 'model' and 'data'")
        data = d["data"]
        if not isinstance(data, list | tuple) or not all(isinstance(x, str) for x in data):
            raise ConfigError(f"retrain spec 'data' is {data!r}; expected a list of NAME:VERSION")
        try:
            return cls(
                model=ModelRef.parse(str(d["model"])),
                data=tuple(DatasetRef.parse(x) for x in data),
                init=_enum(Init, d.get("init", "champion"), "init"),
                checkpoint=None if d.get("checkpoint") is None else str(d["checkpoint"]),
                epochs=None if d.get("epochs") is None else int(d["epochs"]),
                holdout=float(d.get("holdout", 0.3)),
                max_original_drop=float(d.get("max_original_drop", 0.01)),
                min_recent_gain=float(d.get("min_recent_gain", 0.0)),
                recent_repeat=int(d.get("recent_repeat", 0)),
                trigger=_enum(Trigger, d.get("trigger", "manual"), "trigger"),
                seed=int(d.get("seed", 0)),
                optimize=bool(d.get("optimize", True)),
                bench_runs=int(d.get("bench_runs", 100)),
                work_dir=str(d.get("work_dir", "")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"retrain spec has a field of the wrong type: {exc}") from exc
