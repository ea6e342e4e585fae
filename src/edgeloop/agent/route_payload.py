"""What an MQTT route reads and writes: sensor payloads in, result documents out (pure; no I/O).

Accepted payloads (docs/mqtt.md):

- JSON ``{"features": [...], "id": ...}``: one sample as a flat list (a batch of one) or a batch
  as a list of rows; a bare JSON list is the same as ``{"features": list}``.
- JSON ``{"inputs": [{"name", "shape", "datatype", "data"}], "id": ...}``: Open Inference
  Protocol v2's request with one input.
- Binary with MQTT v5 properties: content type ``application/octet-stream``, user properties
  ``dtype`` (default ``float32``), ``shape`` (``"1,4"``; default one sample of all the values)
  and ``id``; the payload is the raw little-endian array.
- Binary with the fixed header, for MQTT 3.1.1 publishers: ``b"ELT1"``, dtype code (u8), number
  of dimensions (u8), id length (u16), the dimensions (u32 each), the id (UTF-8), then the raw
  little-endian array. All integers little-endian. :func:`pack_tensor` writes it.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeloop.core.errors import DataError

MAGIC = b"ELT1"
_HEAD = struct.Struct("<4sBBH")
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float64", "float16", "int64", "int32", "int8", "uint8")
}
DTYPE_CODES = {
    1: "float32",
    2: "float64",
    3: "float16",
    4: "int64",
    5: "int32",
    6: "int8",
    7: "uint8",
}
_OIP = {name.upper().replace("FLOAT", "FP"): name for name in DTYPES}  # FP32 -> float32, ...
BINARY_TYPES = ("application/octet-stream", "application/x-edgeloop-tensor")


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message's features (batch axis first) and the id its sender gave it, if any."""

    features: np.ndarray
    source_id: str | None


def decode(
    payload: bytes, content_type: str | None = None, user: Mapping[str, str] | None = None
) -> Decoded:
    """Features and source id of one message.

    Raises:
        DataError: the payload is none of the formats above, or its values do not fit its
            declared shape, or they are not finite numbers.
    """
    user = user or {}
    if payload[:4] == MAGIC:
        return _decode_header(payload)
    if (content_type or "").split(";")[0].strip() in BINARY_TYPES or "dtype" in user:
        shape = _shape(user["shape"]) if "shape" in user else None
        array = _from_bytes(payload, user.get("dtype", "float32"), shape)
        return Decoded(array, user.get("id"))
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"payload is not JSON ({exc}), has no {MAGIC!r} tensor header and no binary "
            "content type",
            hint="publish JSON {'features': [...]} or a binary tensor (docs/mqtt.md)",
        ) from exc
    return _decode_json(doc, user.get("id"))


def _decode_json(doc: Any, fallback_id: str | None) -> Decoded:
    if isinstance(doc, list):
        doc = {"features": doc}
    if not isinstance(doc, dict):
        raise DataError(f"JSON payload is a {type(doc).__name__}, expected an object or a list")
    source_id = doc.get("id", fallback_id)
    source_id = None if source_id is None else str(source_id)
    if "features" in doc:
        array = _numbers(doc["features"], "features", np.dtype(np.float32))
        return Decoded(array[None] if array.ndim == 1 else array, source_id)
    if "inputs" in doc:
        return Decoded(_oip_input(doc["inputs"]), source_id)
    raise DataError(
        f"JSON payload has keys {sorted(doc)[:8]}, expected 'features' or 'inputs'",
        hint='publish {"features": [numbers], "id": "..."}',
    )


def _oip_input(inputs: Any) -> np.ndarray:
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise DataError("'inputs' must be a list of exactly one tensor object (routes feed one)")
    tensor = inputs[0]
    datatype = tensor.get("datatype", "FP32")
    if datatype not in _OIP:
        raise DataError(f"input datatype {datatype!r} is not one of {sorted(_OIP)}")
    array = _numbers(tensor.get("data"), "data", np.dtype(_OIP[datatype]))
    shape = _shape(tensor.get("shape"))
    if array.size != int(np.prod(shape)):
        needs = int(np.prod(shape))
        raise DataError(f"input has {array.size} values, its shape {list(shape)} needs {needs}")
    return array.reshape(shape)


def _decode_header(payload: bytes) -> Decoded:
    if len(payload) < _HEAD.size:
        raise DataError(f"tensor header is cut short: {len(payload)} bytes")
    _, code, ndim, id_len = _HEAD.unpack_from(payload)
    if code not in DTYPE_CODES:
        raise DataError(f"tensor header dtype code {code} is not one of {DTYPE_CODES}")
    end = _HEAD.size + 4 * ndim + id_len
    if len(payload) < end:
        raise DataError(f"tensor header says {ndim} dims and a {id_len}-byte id; cut short")
    shape = struct.unpack_from(f"<{ndim}I", payload, _HEAD.size)
    raw_id = payload[_HEAD.size + 4 * ndim : end]
    try:
        source_id = raw_id.decode() or None
    except UnicodeDecodeError as exc:
        raise DataError("tensor header id is not UTF-8") from exc
    return Decoded(_from_bytes(payload[end:], DTYPE_CODES[code], tuple(shape)), source_id)


def _from_bytes(data: bytes, dtype: str, shape: tuple[int, ...] | None) -> np.ndarray:
    if dtype not in DTYPES:
        raise DataError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    itemsize = DTYPES[dtype].itemsize
    if len(data) % itemsize or not data:
        raise DataError(f"{len(data)} bytes are not a whole number of {dtype} values")
    array = np.frombuffer(data, dtype=DTYPES[dtype]).astype(DTYPES[dtype].newbyteorder("="))
    if shape is None:
        return _finite(array[None])
    if array.size != int(np.prod(shape)):
        raise DataError(
            f"{array.size} {dtype} values do not fill shape {list(shape)} "
            f"({int(np.prod(shape))} values)",
            hint="send dtype and shape that match the bytes",
        )
    return _finite(array.reshape(shape))


def _numbers(value: Any, what: str, dtype: np.dtype[Any]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{what!r} is not a regular (non-ragged) list of numbers") from exc
    if array.ndim == 0 or array.size == 0:
        raise DataError(f"{what!r} must be a non-empty list of numbers")
    return _finite(array)


def _finite(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError("features hold NaN or infinity", hint="send finite numbers")
    return array


def _shape(value: Any) -> tuple[int, ...]:
    try:
        if isinstance(value, str):
            value = [int(v) for v in value.strip("[]() ").split(",") if v.strip()]
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"shape {value!r} is not a list of integers, e.g. '1,4'") from exc
    if not shape or any(d <= 0 for d in shape):
        raise DataError(f"shape {list(shape)} must have positive dimensions")
    return shape


def pack_tensor(array: np.ndarray, source_id: str = "") -> bytes:
    """The fixed-header binary payload for ``array`` (for MQTT 3.1.1 publishers and tests)."""
    name = np.dtype(array.dtype).name
    codes = {v: k for k, v in DTYPE_CODES.items()}
    if name not in codes:
        raise DataError(f"dtype {name!r} is not one of {sorted(codes)}")
    raw_id = source_id.encode()
    head = _HEAD.pack(MAGIC, codes[name], array.ndim, len(raw_id))
    dims = struct.pack(f"<{array.ndim}I", *array.shape)
    return head + dims + raw_id + np.ascontiguousarray(array, DTYPES[name]).tobytes()


def result_document(
    *,
    route: str,
    model: str,
    model_version: Any,
    outputs: Any,
    latency_ms: float,
    source_id: str | None,
    source_topic: str,
    seq: int,
) -> bytes:
    """The JSON published to the route's THEN topic.

    Raises:
        DataError: the outputs cannot be written as JSON (NaN, infinity, an unknown type).
    """
    plain = _plain(outputs)
    doc = {
        "model": model,
        "model_version": None if model_version is None else str(model_version),
        "outputs": plain,
        "prediction": _prediction(outputs),
        "latency_ms": latency_ms,
        "source_id": source_id,
        "source_topic": source_topic,
        "route": route,
        "seq": seq,
    }
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise DataError(f"the model's outputs cannot be written as JSON: {exc}") from exc


def deadletter_document(
    *,
    route: str,
    reason: str,
    error: str,
    source_topic: str,
    source_id: str | None,
    payload: bytes,
    payload_bytes: int | None = None,
    at: str,
) -> bytes:
    """The JSON published to ``<prefix>/deadletter``: why, and the original bytes (only the first
    ones of an oversized message: ``payload_bytes`` then gives its full length)."""
    doc = {
        "route": route,
        "reason": reason,
        "error": error,
        "source_topic": source_topic,
        "source_id": source_id,
        "payload_b64": base64.b64encode(payload).decode("ascii"),
        "payload_bytes": len(payload) if payload_bytes is None else payload_bytes,
        "at": at,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _plain(outputs: Any) -> Any:
    if isinstance(outputs, np.ndarray | np.generic):
        return outputs.tolist()
    if isinstance(outputs, Mapping):
        return {str(k): _plain(v) for k, v in outputs.items()}
    if isinstance(outputs, Sequence) and not isinstance(outputs, str):
        return [_plain(v) for v in outputs]
    return outputs


def _prediction(outputs: Any) -> list[int] | None:
    """Argmax per row of a (batch, classes) float output; ``None`` for any other output."""
    if isinstance(outputs, Sequence) and len(outputs) == 1:
        outputs = outputs[0]
    if (
        isinstance(outputs, np.ndarray)
        and outputs.ndim == 2
        and outputs.shape[1] > 1
        and outputs.dtype.kind == "f"
    ):
        return [int(i) for i in outputs.argmax(axis=1)]
    return None
