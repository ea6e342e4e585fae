"""Open Inference Protocol v2 (the KServe / Triton REST protocol): the infer codec.

Follows the KServe "V2 inference protocol" REST spec and Triton's ``binary_tensor_data``
extension, so ``tritonclient.http`` and KServe clients work unchanged:

- a JSON request ``{"id", "parameters", "inputs": [{"name", "shape", "datatype", "data"}],
  "outputs": [{"name", "parameters": {"binary_data": true}}]}``; ``data`` row-major, flat or
  nested;
- binary inputs: the header ``Inference-Header-Content-Length: N`` says the first N bytes are the
  JSON; each binary input carries ``"parameters": {"binary_data_size": S}`` and its S raw
  little-endian bytes follow the JSON in the order the inputs appear;
- binary outputs are asked for per output (``binary_data``) or for all (request parameter
  ``binary_data_output``) and are answered the same way, with the header set on the response.

Decoding is pure (bytes in, typed values out) and raises :class:`BadRequestError` naming the
field; whether the tensors fit the model is :mod:`edgeloop.serving.validation`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edgeloop.core.errors import ConversionError
from edgeloop.core.types import TensorSpec
from edgeloop.serving.errors import BadRequestError

HEADER = "inference-header-content-length"
MAX_RANK = 32
# The most elements a tensor's shape may span: 2**31 values are 8 GiB of FP32, far above any
# body limit, and far below what numpy's intp indexing overflows at.
MAX_ELEMENTS = 2**31

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
# Numpy kinds a JSON list may decode to for each target kind: no floats into ints, no numbers
# into BOOL, no strings anywhere (numpy would parse "1.5" silently).
_JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
_SPEC_DATATYPE = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "int8": "INT8",
    "uint8": "UINT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}


def datatype_of(spec: TensorSpec) -> str:
    """The protocol's datatype name for a model tensor (``float32`` -> ``FP32``)."""
    return _SPEC_DATATYPE[spec.dtype]


def protocol_shape(spec: TensorSpec) -> list[int]:
    """The protocol's shape: a free axis is ``-1``."""
    return [-1 if d is None else d for d in spec.shape]


@dataclass(frozen=True, slots=True, eq=False)
class InputTensor:
    """One decoded input: ``array`` has ``shape`` and the dtype of ``datatype``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True, slots=True, eq=False)
class InferRequest:
    """A decoded infer request; ``outputs`` None means every output of the model."""

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool


def decode_infer(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer request body; ``header_length`` is the binary extension's header.

    Raises:
        BadRequestError: malformed JSON or binary header, a field of the wrong kind, an unknown
            datatype, data that does not match its shape, binary sizes that do not add up.
    """
    json_part, binary = _split_body(body, header_length)
    doc = _load_json(json_part)
    params = _object(doc.get("parameters", {}), "request 'parameters'")
    binary_output = _flag(params, "binary_data_output", "request parameter")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f"request 'id' must be a string, got {_kind(request_id)}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequestError(
            f"request 'inputs' must be a non-empty list, got {_kind(raw_inputs)}",
            hint='send {"inputs": [{"name", "shape", "datatype", "data"}]}',
        )
    inputs, used = [], 0
    for i, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(_object(raw, f"inputs[{i}]"), binary, used)
        inputs.append(tensor)
    if used != len(binary):
        raise BadRequestError(
            f"the body carries {len(binary)} bytes of binary tensor data after the JSON header, "
            f"but the inputs' binary_data_size add up to {used}"
        )
    return InferRequest(request_id, tuple(inputs), _decode_outputs(doc), binary_output)


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not text.isdigit() or not 0 < int(text) <= len(body):
        raise BadRequestError(
            f"Inference-Header-Content-Length is {header_length[:40]!r}; expected the byte "
            f"length of the JSON part, between 1 and the body size {len(body)}"
        )
    n = int(text)
    return body[:n], memoryview(body)[n:]


def _load_json(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(
            f"the request body is not valid JSON: {exc}",
            hint="send a JSON object; with binary tensors, set Inference-Header-Content-Length",
        ) from exc
    return _object(doc, "the request body")


def _decode_input(
    raw: Mapping[str, Any], binary: memoryview, offset: int
) -> tuple[InputTensor, int]:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError(f"an input's 'name' must be a non-empty string, got {_kind(name)}")
    dtype, datatype = _datatype(name, raw.get("datatype"))
    shape = _shape(name, raw.get("shape"))
    params = _object(raw.get("parameters", {}), f"input {name!r} 'parameters'")
    if "shared_memory_region" in params:
        raise BadRequestError(
            f"input {name!r} asks for shared memory, which this server does not offer",
            hint="send the tensor in the body (JSON 'data' or binary_data_size)",
        )
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in raw:
            raise BadRequestError(f"input {name!r} has neither 'data' nor binary_data_size")
        array = _from_json(name, raw["data"], dtype, shape)
        return InputTensor(name, datatype, shape, array), offset
    array = _from_binary(name, size, binary, offset, dtype, shape)
    return InputTensor(name, datatype, shape, array), offset + array.nbytes


def _datatype(name: str, datatype: Any) -> tuple[np.dtype[Any], str]:
    if datatype in DATATYPES:
        return DATATYPES[datatype], datatype
    note = " (BYTES tensors are not served: every model input here is numeric)"
    raise BadRequestError(
        f"input {name!r} has datatype {str(datatype)[:40]!r}; expected one of "
        f"{', '.join(DATATYPES)}" + (note if datatype == "BYTES" else "")
    )


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    """The shape as given, once it is a list of at most ``MAX_RANK`` sizes >= 0 whose non-zero
    sizes multiply to at most ``MAX_ELEMENTS`` (numpy refuses larger shapes, even empty ones:
    ``[2**63 - 1, 0]`` holds no value but cannot be reshaped to)."""
    ok = isinstance(shape, list) and len(shape) <= MAX_RANK
    if ok and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        spanned = math.prod(d for d in shape if d)
        if spanned <= MAX_ELEMENTS:
            return tuple(shape)
        raise BadRequestError(
            f"input {name!r} has shape {str(shape)[:80]}, whose non-zero axes multiply to "
            f"{str(spanned)[:24]} elements; at most {MAX_ELEMENTS} are accepted",
            hint="send the tensor's real shape: its sizes multiply to the number of values",
        )
    raise BadRequestError(
        f"input {name!r} has shape {str(shape)[:80]}; expected a list of at most {MAX_RANK} "
        "non-negative integers"
    )


def _from_json(
    name: str, data: Any, dtype: np.dtype[Any], shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if not isinstance(data, list):
        raise BadRequestError(f"input {name!r} 'data' must be a list, got {_kind(data)}")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequestError(
            f"input {name!r} 'data' is not a regular array of numbers: nested lists differ in "
            f"length or mix lists and numbers (shape {list(shape)} needs {count} values)"
        ) from exc
    if raw.size != count:
        raise BadRequestError(
            f"input {name!r} 'data' has {raw.size} values; its shape {list(shape)} needs {count}"
        )
    if raw.size and raw.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise BadRequestError(
            f"input {name!r} 'data' holds {_json_kind(raw)}; datatype "
            f"{_name_of(dtype)} needs {_wanted(dtype)}"
        )
    if raw.size and dtype.kind in "iu":
        _check_range(name, raw, dtype)
    with np.errstate(all="ignore"):  # float64 -> float32 overflow becomes inf, judged later
        return raw.astype(dtype, copy=False).reshape(shape)


def _check_range(name: str, raw: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> None:
    info = np.iinfo(dtype)
    low, high = int(raw.min()), int(raw.max())
    if low < info.min or high > info.max:
        bad = low if low < info.min else high
        raise BadRequestError(
            f"input {name!r} holds {bad}, outside {_name_of(dtype)}'s range "
            f"[{info.min}, {info.max}]"
        )


def _from_binary(
    name: str,
    size: Any,
    binary: memoryview,
    offset: int,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
) -> np.ndarray[Any, Any]:
    count = math.prod(shape)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequestError(f"input {name!r} binary_data_size must be an integer >= 0")
    if size != count * dtype.itemsize:
        raise BadRequestError(
            f"input {name!r} has binary_data_size {size}; shape {list(shape)} of "
            f"{_name_of(dtype)} needs {count * dtype.itemsize} bytes"
        )
    if offset + size > len(binary):
        raise BadRequestError(
            f"input {name!r} needs bytes {offset}..{offset + size} of the binary data, but only "
            f"{len(binary)} bytes follow the JSON header",
            hint="check Inference-Header-Content-Length is the JSON part's length",
        )
    return np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)


def _decode_outputs(doc: Mapping[str, Any]) -> tuple[RequestedOutput, ...] | None:
    raw = doc.get("outputs")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadRequestError(f"request 'outputs' must be a list, got {_kind(raw)}")
    outputs = []
    for i, item in enumerate(raw):
        out = _object(item, f"outputs[{i}]")
        name = out.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequestError(f"outputs[{i}] 'name' must be a non-empty string")
        params = _object(out.get("parameters", {}), f"output {name!r} 'parameters'")
        for unsupported in ("classification", "shared_memory_region"):
            if unsupported in params:
                raise BadRequestError(
                    f"output {name!r} asks for {unsupported!r}, which this server does not offer",
                    hint="ask for the raw output tensor and post-process it in the client",
                )
        outputs.append(RequestedOutput(name, _flag(params, "binary_data", f"output {name!r}")))
    return tuple(outputs)


def encode_infer(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers for ``outputs`` (already restricted to those asked for).

    ``parameters`` become the response's ``parameters`` object (e.g. a cascade's
    ``answered_by``), which the protocol allows on every response.

    A binary output's bytes follow the JSON part in output order and the response carries
    ``Inference-Header-Content-Length``; with none binary the body is plain JSON.
    """
    binary_flags = _binary_flags(request, outputs)
    described, blobs = [], []
    for name, value in outputs.items():
        array = np.ascontiguousarray(value)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": _output_datatype(name, array.dtype),
            "shape": list(array.shape),
        }
        if binary_flags[name]:
            little = (
                array
                if array.dtype.byteorder != ">"
                else array.byteswap().view(array.dtype.newbyteorder("<"))
            )
            blob = little.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1)
        described.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = dict(parameters)
    doc["outputs"] = described
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER: str(len(header))}
    return b"".join([header, *blobs]), headers


def _binary_flags(request: InferRequest, outputs: Mapping[str, Any]) -> dict[str, bool]:
    if request.outputs is None:
        return dict.fromkeys(outputs, request.binary_output)
    asked = {o.name: o.binary or request.binary_output for o in request.outputs}
    return {name: asked.get(name, request.binary_output) for name in outputs}


def tensor_metadata(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    """``[{"name", "datatype", "shape"}]`` as model metadata lists inputs and outputs."""
    return [{"name": s.name, "datatype": datatype_of(s), "shape": protocol_shape(s)} for s in specs]


_NAMES: dict[np.dtype[Any], str] = {
    **{dtype.newbyteorder(">"): name for name, dtype in DATATYPES.items()},
    **{dtype: name for name, dtype in DATATYPES.items()},
}


def _name_of(dtype: np.dtype[Any]) -> str:
    return _NAMES.get(dtype, str(dtype))


def _output_datatype(name: str, dtype: np.dtype[Any]) -> str:
    datatype = _name_of(dtype)
    if datatype not in DATATYPES:
        raise ConversionError(
            f"output {name!r} is a {dtype} tensor, which has no Open Inference Protocol datatype",
            hint="serve a model whose outputs are numeric tensors",
        )
    return datatype


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be a JSON object, got {_kind(value)}")
    return value


def _flag(params: Mapping[str, Any], key: str, what: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"{what} {key!r} must be true or false, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "nothing"
    return names.get(type(value), f"a number ({str(value)[:20]})")


def _json_kind(raw: np.ndarray[Any, Any]) -> str:
    return {"f": "decimals", "i": "integers", "u": "integers", "b": "booleans"}.get(
        raw.dtype.kind, "strings or objects"
    )


def _wanted(dtype: np.dtype[Any]) -> str:
    return {"f": "numbers", "i": "integers", "u": "integers", "b": "true/false"}[dtype.kind]
