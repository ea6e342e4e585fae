"""The values a benchmark takes and gives: :class:`BenchConfig` in, :class:`BenchReport` out.

Both convert to and from plain JSON dicts: the isolated worker (:mod:`edgeloop.bench.worker`)
receives a config and answers a report that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeloop.bench.machine import Machine
from edgeloop.core.errors import ConfigError
from edgeloop.core.types import Measurement


class RssScope(StrEnum):
    """Whose peak resident memory ``peak_rss_mb`` is."""

    # A fresh process holding only ONNX Runtime, this model and its benchmark inputs.
    SUBPROCESS = "subprocess"
    # The calling process, with everything else it had loaded before.
    PROCESS = "process"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure. ``split_name`` names the data in ``accuracy_split``; ``evaluate=False``
    uses the data as inputs only (no accuracy pass)."""

    model_path: Path
    batch_size: int = 1
    runs: int = 200
    warmup: int = 20
    threads: int | None = None
    split_name: str | None = None
    evaluate: bool = True

    def __post_init__(self) -> None:
        checks = (
            ("batch_size", self.batch_size, 1),
            ("runs", self.runs, 1),
            ("warmup", self.warmup, 0),
            ("threads", 1 if self.threads is None else self.threads, 1),
        )
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"{name}={value!r} is not valid; expected an integer >= {low}",
                    hint=f"pass --{name.replace('_', '-')} {max(low, 1)} or more",
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_path": str(self.model_path),
            "batch_size": self.batch_size,
            "runs": self.runs,
            "warmup": self.warmup,
            "threads": self.threads,
            "split_name": self.split_name,
            "evaluate": self.evaluate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchConfig:
        return cls(
            model_path=Path(d["model_path"]),
            batch_size=int(d["batch_size"]),
            runs=int(d["runs"]),
            warmup=int(d["warmup"]),
            threads=None if d.get("threads") is None else int(d["threads"]),
            split_name=d.get("split_name"),
            evaluate=bool(d.get("evaluate", True)),
        )


@dataclass(frozen=True, slots=True)
class BenchReport:
    """A :class:`Measurement` plus how it was taken. ``to_dict`` is the Measurement's dict
    (the DESIGN's bench shape) with these extra keys.

    ``roc_auc`` is set for anomaly data sets, where ``accuracy`` is None; ``accuracy_note`` says
    why accuracy is None whenever it is.
    """

    measurement: Measurement
    warmup: int
    rss_scope: RssScope
    inputs: str
    input_shapes: tuple[str, ...]
    timed_s: float
    roc_auc: float | None
    roc_auc_split: str | None
    accuracy_note: str | None
    engine_version: str
    machine: Machine

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.measurement.to_dict(),
            "warmup": self.warmup,
            "rss_scope": self.rss_scope.value,
            "inputs": self.inputs,
            "input_shapes": list(self.input_shapes),
            "timed_s": self.timed_s,
            "roc_auc": self.roc_auc,
            "roc_auc_split": self.roc_auc_split,
            "accuracy_note": self.accuracy_note,
            "engine_version": self.engine_version,
            "machine": self.machine.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchReport:
        auc = d.get("roc_auc")
        return cls(
            measurement=Measurement.from_dict(d),
            warmup=int(d["warmup"]),
            rss_scope=RssScope(d["rss_scope"]),
            inputs=str(d["inputs"]),
            input_shapes=tuple(str(s) for s in d["input_shapes"]),
            timed_s=float(d["timed_s"]),
            roc_auc=None if auc is None else float(auc),
            roc_auc_split=d.get("roc_auc_split"),
            accuracy_note=d.get("accuracy_note"),
            engine_version=str(d["engine_version"]),
            machine=Machine.from_dict(d["machine"]),
        )
