"""Frozen, validated values that travel between the stages of the loop.

Each value checks itself in ``__post_init__`` and converts to and from plain JSON-able dicts
(``to_dict`` / ``from_dict``) so manifests and reports are stable files, not pickles.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeloop.core.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid name",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, shape and dtype of one model input or output; ``None`` in a shape is a free axis."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a tensor spec needs a non-empty name")
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"tensor {self.name!r} has dtype {self.dtype!r}; "
                f"expected one of {', '.join(DTYPES)}"
            )
        bad = [d for d in self.shape if d is not None and (not isinstance(d, int) or d < 1)]
        if bad:
            raise ConfigError(
                f"tensor {self.name!r} has shape {list(self.shape)}; every axis must be a "
                f"positive int or None (free), got {bad}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), tuple(d["shape"]), str(d.get("dtype", "float32")))


@dataclass(frozen=True, slots=True)
class ModelRef:
    """``name`` or ``name:version``; a missing version means the latest."""

    name: str
    version: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "model name")
        if self.version is not None and self.version < 1:
            raise ConfigError(f"model version {self.version} is not valid; versions start at 1")

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse ``name[:version]``, reporting every problem in one error."""
        problems: list[str] = []
        name, sep, ver = text.strip().partition(":")
        if not name:
            problems.append("the name is empty")
        elif not _NAME.match(name):
            problems.append(
                f"name {name!r} must be 1-128 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        version: int | None = None
        if sep:
            if ver.isdigit() and int(ver) >= 1:
                version = int(ver)
            elif ver == "latest":
                version = None
            else:
                problems.append(f"version {ver!r} must be a positive integer or 'latest'")
        if problems:
            raise ConfigError(
                f"model reference {text!r} is not valid: " + "; ".join(problems),
                hint="write NAME or NAME:VERSION, e.g. digits-cnn:3",
            )
        return cls(name, version)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles in milliseconds over ``runs`` timed runs."""

    p50: float
    p90: float
    p99: float

    def __post_init__(self) -> None:
        for v in (self.p50, self.p90, self.p99):
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"latency {v} ms is not a finite non-negative number")
        if not self.p50 <= self.p90 <= self.p99:
            raise ConfigError(
                f"latency percentiles out of order: {self.p50}, {self.p90}, {self.p99}"
            )

    def to_dict(self) -> dict[str, float]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Latency:
        return cls(float(d["p50"]), float(d["p90"]), float(d["p99"]))


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one benchmark run measured. Every figure is measured in that run or ``None``.

    ``power_source`` names the meter (``"rapl"``, ``"ina3221"``) or, when ``power_w`` is None,
    the reason no reading exists. ``accuracy_split`` names the data the accuracy was measured on.
    """

    model: str
    engine: str
    provider: str
    batch_size: int
    runs: int
    latency_ms: Latency
    throughput_per_s: float
    peak_rss_mb: float | None
    size_bytes: int
    accuracy: float | None
    accuracy_split: str | None
    power_w: float | None
    power_source: str
    cpu: str
    threads: int

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.runs < 1 or self.threads < 1:
            raise ConfigError(
                f"batch_size={self.batch_size}, runs={self.runs}, threads={self.threads}: "
                "each must be >= 1"
            )
        if self.accuracy is not None and not 0.0 <= self.accuracy <= 1.0:
            raise ConfigError(f"accuracy {self.accuracy} is outside [0, 1]")
        if (self.accuracy is None) != (self.accuracy_split is None):
            raise ConfigError("accuracy and accuracy_split must be given together")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "engine": self.engine,
            "provider": self.provider,
            "batch_size": self.batch_size,
            "runs": self.runs,
            "latency_ms": self.latency_ms.to_dict(),
            "throughput_per_s": self.throughput_per_s,
            "peak_rss_mb": self.peak_rss_mb,
            "size_bytes": self.size_bytes,
            "accuracy": self.accuracy,
            "accuracy_split": self.accuracy_split,
            "power_w": self.power_w,
            "power_source": self.power_source,
            "cpu": self.cpu,
            "threads": self.threads,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        return cls(
            model=str(d["model"]),
            engine=str(d["engine"]),
            provider=str(d["provider"]),
            batch_size=int(d["batch_size"]),
            runs=int(d["runs"]),
            latency_ms=Latency.from_dict(d["latency_ms"]),
            throughput_per_s=float(d["throughput_per_s"]),
            peak_rss_mb=None if d.get("peak_rss_mb") is None else float(d["peak_rss_mb"]),
            size_bytes=int(d["size_bytes"]),
            accuracy=None if d.get("accuracy") is None else float(d["accuracy"]),
            accuracy_split=d.get("accuracy_split"),
            power_w=None if d.get("power_w") is None else float(d["power_w"]),
            power_source=str(d["power_source"]),
            cpu=str(d["cpu"]),
            threads=int(d["threads"]),
        )


@dataclass(frozen=True, slots=True)
class Parity:
    """How closely a converted model matches its parent on ``samples`` held-out inputs.

    ``top1_agreement`` is the share of samples whose arg-max class is the same; it is ``None``
    for models whose output is not a class score (an anomaly score, a regression).
    """

    max_abs_diff: float
    top1_agreement: float | None
    samples: int
    split: str

    def __post_init__(self) -> None:
        if self.top1_agreement is not None and not 0.0 <= self.top1_agreement <= 1.0:
            raise ConfigError(f"top1_agreement {self.top1_agreement} is outside [0, 1]")
        if self.samples < 1:
            raise ConfigError("parity needs at least one sample")

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "samples": self.samples,
            "split": self.split,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Parity:
        top1 = d.get("top1_agreement")
        return cls(
            float(d["max_abs_diff"]),
            None if top1 is None else float(top1),
            int(d["samples"]),
            str(d["split"]),
        )


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """The reference profile a manifest lists: a content-addressed artifact of the version.

    ``format_version`` is the profile's own format (``edgeloop.monitoring``), ``rows`` the
    reference size it was calibrated on, ``dataset`` the data set it summarises.
    """

    sha256: str
    size_bytes: int
    format_version: int
    rows: int
    dataset: str | None = None

    def __post_init__(self) -> None:
        if not _SHA256.match(self.sha256):
            raise ConfigError(f"profile sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if self.size_bytes < 1 or self.format_version < 1 or self.rows < 2:
            raise ConfigError(
                f"profile record of {self.size_bytes} B, format {self.format_version}, "
                f"{self.rows} rows; expected a size >= 1, a format >= 1 and >= 2 rows"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "format_version": self.format_version,
            "rows": self.rows,
            "dataset": self.dataset,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileRecord:
        dataset = d.get("dataset")
        return cls(
            str(d["sha256"]),
            int(d["size_bytes"]),
            int(d["format_version"]),
            int(d["rows"]),
            None if dataset is None else str(dataset),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything known about one model artifact: what it is, where it came from, how it measured.

    ``recipe`` holds the exact settings that produced the artifact (architecture, training
    hyper-parameters, optimization steps); ``tools`` the versions of the tools that ran;
    ``parent`` the registry ref of the model it was derived from; ``profile`` the reference
    profile made at registration (absent in manifests written before profiles existed).
    """

    name: str
    format: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source_data_hash: str | None = None
    dataset: str | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    parity: Parity | None = None
    measurements: tuple[Measurement, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    tools: Mapping[str, str] = field(default_factory=dict)
    parent: ModelRef | None = None
    labels: tuple[str, ...] = ()
    profile: ProfileRecord | None = None

    FORMATS = ("onnx", "tflite", "openvino", "coreml", "c_array", "torch")

    def __post_init__(self) -> None:
        _check_name(self.name, "model name")
        if self.format not in self.FORMATS:
            raise ConfigError(
                f"model format {self.format!r} is not known; "
                f"expected one of {', '.join(self.FORMATS)}"
            )
        if not self.inputs or not self.outputs:
            raise ConfigError(f"manifest of {self.name!r} needs at least one input and one output")

    def to_dict(self) -> dict[str, Any]:
        # "profile" only when there is one: manifests without it keep their exact old form.
        extra = {} if self.profile is None else {"profile": self.profile.to_dict()}
        return {
            "name": self.name,
            "format": self.format,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "source_data_hash": self.source_data_hash,
            "dataset": self.dataset,
            "recipe": dict(self.recipe),
            "parity": None if self.parity is None else self.parity.to_dict(),
            "measurements": [m.to_dict() for m in self.measurements],
            "metrics": dict(self.metrics),
            "tools": dict(self.tools),
            "parent": None if self.parent is None else str(self.parent),
            "labels": list(self.labels),
            **extra,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        parity = d.get("parity")
        parent = d.get("parent")
        profile = d.get("profile")
        return cls(
            name=str(d["name"]),
            format=str(d["format"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            source_data_hash=d.get("source_data_hash"),
            dataset=d.get("dataset"),
            recipe=dict(d.get("recipe") or {}),
            parity=None if parity is None else Parity.from_dict(parity),
            measurements=tuple(Measurement.from_dict(m) for m in d.get("measurements") or ()),
            metrics={str(k): float(v) for k, v in (d.get("metrics") or {}).items()},
            tools={str(k): str(v) for k, v in (d.get("tools") or {}).items()},
            parent=None if parent is None else ModelRef.parse(str(parent)),
            labels=tuple(str(x) for x in d.get("labels") or ()),
            profile=None if profile is None else ProfileRecord.from_dict(profile),
        )


def shape_str(shape: Sequence[int | None]) -> str:
    """``(None, 1, 8, 8)`` -> ``"?x1x8x8"`` for tables and messages."""
    return "x".join("?" if d is None else str(d) for d in shape)
