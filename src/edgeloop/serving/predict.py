"""The simple API: ``POST /predict {"features": [...], "request_id": ...}`` for one sample.

The answer is ``{"prediction", "confidence", "request_id", "model_version"}`` (plus ``model``
and ``variant``). For a model with one input, ``features`` is one sample: a flat list of its
values (reshaped to the input's per-sample shape) or the sample's nested lists.

The prediction is read from the model's first output, row 0:

- one value (a score, a regression): ``prediction`` is that value, ``confidence`` is null;
- several values: ``prediction`` is the arg-max class index; ``confidence`` is its probability.
  A row that already is a distribution (non-negative, summing to 1 within 1e-3) is used as is;
  any other row is taken as logits and passed through a softmax first. A row holding NaN or
  Inf gives null for both.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edgeloop.core.errors import DataError
from edgeloop.core.types import TensorSpec, shape_str
from edgeloop.serving.errors import BadRequestError
from edgeloop.serving.validation import check_finite

_ROUTE_HINT = "use POST /v2/models/{name}/infer for models with several inputs"


@dataclass(frozen=True, slots=True, eq=False)
class PredictRequest:
    features: Any
    request_id: str
    model: str | None


def parse_predict(body: bytes) -> PredictRequest:
    """Decode a /predict body; a missing ``request_id`` gets a fresh UUID.

    Raises:
        BadRequestError: not a JSON object, no ``features`` list, a ``request_id`` or ``model``
            that is not a string.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(
            f"the request body is not valid JSON: {exc}",
            hint='send {"features": [numbers], "request_id": "optional"}',
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
        raise BadRequestError(
            "the request needs a 'features' list of numbers",
            hint='send {"features": [numbers], "request_id": "optional"}',
        )
    request_id, model = doc.get("request_id"), doc.get("model")
    if request_id is not None and not isinstance(request_id, str | int):
        raise BadRequestError("'request_id' must be a string (or an integer)")
    if model is not None and not isinstance(model, str):
        raise BadRequestError("'model' must be the name of a served model")
    rid = str(request_id) if request_id is not None else uuid.uuid4().hex
    return PredictRequest(doc["features"], rid, model)


def feeds_for(
    where: str, request: PredictRequest, inputs: tuple[TensorSpec, ...], allow_nonfinite: bool
) -> dict[str, np.ndarray[Any, Any]]:
    """The model's single input holding ``features`` as one sample (batch axis of 1).

    Raises:
        DataError: the model has several inputs, or the features are not numbers, or their
            count or nesting does not fit the input's per-sample shape.
    """
    if len(inputs) != 1:
        raise DataError(f"{where} has {len(inputs)} inputs; /predict serves one", hint=_ROUTE_HINT)
    spec = inputs[0]
    try:
        raw = np.asarray(request.features)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError("'features' is not a regular list of numbers") from exc
    if raw.dtype.kind not in "fiub" or raw.size == 0:
        raise DataError(f"'features' must be a non-empty list of numbers, got {raw.dtype.kind!r}")
    sample = _sample_shape(where, spec, raw)
    _refuse_lossy_cast(where, spec, raw)
    with np.errstate(all="ignore"):
        array = raw.astype(spec.dtype).reshape((1, *sample))
    if not allow_nonfinite and array.dtype.kind == "f":
        check_finite(where, "features", array)
    return {spec.name: array}


def _refuse_lossy_cast(where: str, spec: TensorSpec, raw: np.ndarray[Any, Any]) -> None:
    """Raise DataError when casting ``raw`` to an integer or boolean input would change a value
    (``2.7`` into an int input truncated to 2, ``300`` into uint8 wrapped to 44, NaN to garbage):
    the model would answer for another input than the one sent."""
    target = np.dtype(spec.dtype)
    if target.kind not in "iub" or raw.dtype.kind not in "fiub":
        return
    values = raw.astype(np.float64, copy=False).ravel()
    if target.kind == "b":
        bad = ~np.isin(values, (0.0, 1.0))
        expected = "0 or 1 (or true/false)"
    else:
        info = np.iinfo(target)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values != np.round(values))
            bad |= (values < float(info.min)) | (values > float(info.max))
        expected = f"whole numbers from {info.min} to {info.max}"
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{where}'s input {spec.name!r} is {target.name}; 'features' value {first} is "
            f"{raw.ravel()[first].item()!r}, which it cannot hold unchanged (expected {expected})",
            hint="send the values the model's input takes; GET /v2/models/NAME shows its datatype",
        )


def _sample_shape(where: str, spec: TensorSpec, raw: np.ndarray[Any, Any]) -> tuple[int, ...]:
    per_sample = spec.shape[1:]
    if raw.ndim == len(per_sample) and all(
        d is None or d == got for d, got in zip(per_sample, raw.shape, strict=True)
    ):
        return tuple(raw.shape)  # the sample's own nesting
    free = [d for d in per_sample if d is None]
    fixed = math.prod(d for d in per_sample if d is not None)
    if raw.ndim == 1 and not free and raw.size == fixed:
        return tuple(d for d in per_sample if d is not None)
    if raw.ndim == 1 and len(free) == 1 and fixed and raw.size % fixed == 0:
        return tuple(raw.size // fixed if d is None else d for d in per_sample)
    raise DataError(
        f"'features' has shape {shape_str(raw.shape)} ({raw.size} values); {where} takes one "
        f"sample of shape {shape_str(per_sample)} ({fixed} values"
        f"{' times the free axis' if free else ''}), flat or nested",
        hint="send one sample; for batches use POST /v2/models/{name}/infer",
    )


def interpret(
    outputs: dict[str, np.ndarray[Any, Any]],
) -> tuple[float | int | None, float | None]:
    """``(prediction, confidence)`` from the first output's first row (module docstring)."""
    first = next(iter(outputs.values()))
    row = np.asarray(first)[0].reshape(-1) if first.ndim else first.reshape(-1)
    if row.size == 1:
        value = row[0].item()
        return (value if isinstance(value, int) else float(value)), None
    values = row.astype(np.float64)
    if not np.isfinite(values).all():
        return None, None  # no class can be read from NaN/Inf scores
    is_distribution = values.min() >= 0 and abs(values.sum() - 1.0) <= 1e-3
    probs = values if is_distribution else _softmax(values)
    best = int(probs.argmax())
    return best, float(probs[best])


def _softmax(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    e = np.exp(x - x.max())
    return np.asarray(e / e.sum())


def answer(
    request: PredictRequest,
    model: str,
    version: str,
    variant: str,
    outputs: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The /predict answer body; ``extra`` adds keys (a cascade's ``answered_by``)."""
    prediction, confidence = interpret(outputs)
    return {
        "prediction": prediction,
        "confidence": confidence,
        "request_id": request.request_id,
        "model_version": version,
        "model": model,
        "variant": variant,
        **(extra or {}),
    }
