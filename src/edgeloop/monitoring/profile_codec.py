"""Reference profiles as bytes: an ``.npz`` of plain numeric arrays plus a JSON header.

No pickle (``np.load(..., allow_pickle=False)``): a profile arrives on a node from the fleet
and must not be able to run code. The header carries the format version; a reader refuses
other versions and any missing or misshapen field with a ``DataError``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from typing import Any

import numpy as np

from edgeloop.core.errors import DataError, EdgeError
from edgeloop.monitoring.config import MonitorConfig
from edgeloop.monitoring.detector import CalibratedStatistic
from edgeloop.monitoring.features import FeatureMap
from edgeloop.monitoring.profile import OutputProfile, ReferenceProfile
from edgeloop.monitoring.statistic import ChiSquareModel

_MODEL_ARRAYS = ("active", "mean", "scale", "basis", "spread", "energy_mean", "energy_std")
_HASH_ARRAYS = ("bucket", "sign", "centre", "scale")


def encode(profile: ReferenceProfile) -> bytes:
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "low": profile.low,
        "high": profile.high,
        "sketch": profile.sketch,
    }
    stats = {"input": _put_stat(arrays, "input", profile.input)}
    for name in _HASH_ARRAYS:
        value = getattr(profile.features, name)
        if value is not None:
            arrays[f"features.{name}"] = value
    out = profile.outputs
    outputs = None
    if out is not None:
        arrays["outputs.class_priors"] = out.class_priors
        arrays["outputs.confidence_quantiles"] = out.confidence_quantiles
        stats["prediction"] = _put_stat(arrays, "prediction", out.prediction)
        stats["confidence"] = _put_stat(arrays, "confidence", out.confidence)
        outputs = {
            "atc_threshold": out.atc_threshold,
            "reference_accuracy": out.reference_accuracy,
            "source": out.source,
        }
    header = {
        "version": profile.version,
        "detector": profile.detector,
        "config": dataclasses.asdict(profile.config),
        "n": profile.n,
        "sample_shape": list(profile.sample_shape),
        "stats": stats,
        "outputs": outputs,
        "source": profile.source,
    }
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def decode(data: bytes) -> ReferenceProfile:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
        return _build(header, arrays)
    except EdgeError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"not a readable reference profile ({type(exc).__name__}: {exc})",
            hint="rebuild it with DriftMonitor.fit(...).profile.to_bytes()",
        ) from exc


def _build(header: dict[str, Any], arrays: dict[str, np.ndarray[Any, Any]]) -> ReferenceProfile:
    version = int(header["version"])
    if version != ReferenceProfile.__dataclass_fields__["version"].default:
        raise DataError(f"reference profile format version {version} is not supported")
    hashed = {n: arrays[f"features.{n}"] for n in _HASH_ARRAYS if f"features.{n}" in arrays}
    features = FeatureMap(sample_shape=tuple(int(s) for s in header["sample_shape"]), **hashed)
    stats = header["stats"]
    outputs = None
    if header["outputs"] is not None:
        outputs = OutputProfile(
            class_priors=arrays["outputs.class_priors"],
            confidence_quantiles=arrays["outputs.confidence_quantiles"],
            prediction=_get_stat(arrays, "prediction", stats["prediction"]),
            confidence=_get_stat(arrays, "confidence", stats["confidence"]),
            atc_threshold=header["outputs"]["atc_threshold"],
            reference_accuracy=header["outputs"]["reference_accuracy"],
            source=header["outputs"].get("source"),
        )
    return ReferenceProfile(
        detector=str(header["detector"]),
        config=MonitorConfig(**header["config"]),
        n=int(header["n"]),
        features=features,
        low=arrays["low"],
        high=arrays["high"],
        sketch=arrays["sketch"],
        input=_get_stat(arrays, "input", stats["input"]),
        outputs=outputs,
        version=version,
        source=header.get("source"),
    )


def _put_stat(
    arrays: dict[str, np.ndarray[Any, Any]], prefix: str, stat: CalibratedStatistic
) -> dict[str, Any]:
    m = stat.model
    for name in _MODEL_ARRAYS:
        arrays[f"{prefix}.{name}"] = getattr(m, name)
    return {
        "n": m.n,
        "lam": m.lam,
        "clip": m.clip,
        "location_threshold": stat.location_threshold,
        "energy_threshold": stat.energy_threshold,
        "residual_threshold": stat.residual_threshold,
    }


def _get_stat(
    arrays: dict[str, np.ndarray[Any, Any]], prefix: str, meta: dict[str, Any]
) -> CalibratedStatistic:
    fields = {name: arrays[f"{prefix}.{name}"] for name in _MODEL_ARRAYS}
    model = ChiSquareModel(
        **fields, n=int(meta["n"]), lam=float(meta["lam"]), clip=float(meta["clip"])
    )
    residual = meta["residual_threshold"]
    return CalibratedStatistic(
        model,
        float(meta["location_threshold"]),
        float(meta["energy_threshold"]),
        None if residual is None else float(residual),
    )
