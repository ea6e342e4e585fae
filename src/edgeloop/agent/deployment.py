"""The deployment document (``deployments/<node_id>.json``), parsed into typed values.

The document reaches the agent only through the TUF client, so its bytes are signed; its
*content* is still checked here (names, sizes, tensors), because a signed document may come from
a control plane with a bug. Every problem is an :class:`UntrustedArtifactError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeloop.core.errors import UntrustedArtifactError
from edgeloop.core.types import ModelRef

SCHEMA = 1
_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
_WATCH_DEFAULT_S = 30.0  # the contract's example window; a document names its own


def _bad(what: str, got: Any, expected: str) -> UntrustedArtifactError:
    return UntrustedArtifactError(
        f"deployment document: {what} is {str(got)[:80]!r}, expected {expected}",
        hint="the control plane signed a malformed document; fix the deployment and re-publish",
    )


@dataclass(frozen=True, slots=True)
class SelfTest:
    """Sample inputs and the outputs the control plane computed for them, with tolerances."""

    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    atol: float
    rtol: float
    # engine name -> its outputs for the same inputs (engines besides ONNX Runtime, whose
    # outputs are ``outputs``); empty when the control plane had no other engine
    by_engine: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)

    def reference(self, engine: str) -> Mapping[str, np.ndarray] | None:
        """The outputs ``engine`` should give (None: the document has none for it)."""
        return self.outputs if engine == "onnxruntime" else self.by_engine.get(engine)


@dataclass(frozen=True, slots=True)
class Guard:
    """The health window's limits (None: not checked)."""

    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    min_requests: int = 0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model the document names: which artifact, its signed size and hash, its self-test."""

    name: str
    version: int
    variant: str
    target: str
    sha256: str
    length: int
    self_test: SelfTest | None
    raw: Mapping[str, Any]  # the entry as signed, kept in the slot for reports

    @property
    def suffix(self) -> str:
        return "." + self.target.rsplit(".", 1)[-1] if "." in self.target else ""


@dataclass(frozen=True, slots=True)
class Deployment:
    node_id: str
    revision: int
    model: ModelSpec | None  # None: the control plane wants no model served here
    serving: Mapping[str, Any]
    watch_s: float
    guard: Guard
    rollout: str | None


def parse_deployment(data: bytes, node_id: str) -> Deployment:
    """The document in ``data`` (JSON), for node ``node_id``.

    Raises:
        UntrustedArtifactError: not JSON, another node's document, or a bad field.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise _bad("the body", data[:40], "JSON") from exc
    if not isinstance(doc, dict):
        raise _bad("the body", type(doc).__name__, "an object")
    if doc.get("schema") != SCHEMA:
        raise _bad("schema", doc.get("schema"), str(SCHEMA))
    if doc.get("node_id") != node_id:
        raise _bad("node_id", doc.get("node_id"), f"this node's id {node_id!r}")
    revision = doc.get("revision")
    if not isinstance(revision, int) or revision < 1:
        raise _bad("revision", revision, "an integer >= 1")
    models = doc.get("models")
    # One model per node for now (the report's "active" names one model); none: serve nothing
    # (a rollout reverting a node that had no model before).
    if not isinstance(models, list) or len(models) > 1:
        raise _bad("models", models, "a list of at most one model")
    watch = doc.get("watch_s", _WATCH_DEFAULT_S)
    if not isinstance(watch, int | float) or not math.isfinite(watch) or watch < 0:
        raise _bad("watch_s", watch, "a number of seconds >= 0")
    serving = doc.get("serving") or {}
    if not isinstance(serving, dict):
        raise _bad("serving", serving, "an object")
    rollout = doc.get("rollout")
    return Deployment(
        node_id=node_id,
        revision=revision,
        model=_model(models[0]) if models else None,
        serving=serving,
        watch_s=float(watch),
        guard=_guard(doc.get("guard") or {}),
        rollout=str(rollout) if rollout is not None else None,
    )


def parse_model_entry(entry: Any) -> ModelSpec:
    """One model entry of a document (``models[0]``, an experiment's challenger).

    Raises:
        UntrustedArtifactError: a bad field (named).
    """
    return _model(entry)


def _model(entry: Any) -> ModelSpec:
    if not isinstance(entry, dict):
        raise _bad("models[0]", entry, "an object")
    name = entry.get("name")
    try:
        ModelRef(str(name))
    except Exception as exc:
        raise _bad("models[0].name", name, "a model name") from exc
    version = entry.get("version")
    if not isinstance(version, int) or version < 1:
        raise _bad("models[0].version", version, "an integer >= 1")
    target = entry.get("target")
    if not isinstance(target, str) or not target.startswith("artifacts/") or ".." in target:
        raise _bad("models[0].target", target, "a path under artifacts/")
    sha = entry.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise _bad("models[0].sha256", sha, "64 hex digits")
    length = entry.get("length")
    if not isinstance(length, int) or length < 1:
        raise _bad("models[0].length", length, "a size in bytes >= 1")
    test = entry.get("self_test")
    return ModelSpec(
        name=str(name),
        version=version,
        variant=str(entry.get("variant") or "default"),
        target=target,
        sha256=sha.lower(),
        length=length,
        self_test=_self_test(test) if test is not None else None,
        raw=entry,
    )


def _guard(doc: Any) -> Guard:
    if not isinstance(doc, dict):
        raise _bad("guard", doc, "an object")
    rate, p99, least = doc.get("max_error_rate"), doc.get("max_p99_ms"), doc.get("min_requests", 0)
    for what, value in (("max_error_rate", rate), ("max_p99_ms", p99)):
        if value is not None and (not isinstance(value, int | float) or value < 0):
            raise _bad(f"guard.{what}", value, "a number >= 0 or null")
    if not isinstance(least, int) or least < 0:
        raise _bad("guard.min_requests", least, "an integer >= 0")
    return Guard(
        float(rate) if rate is not None else None, float(p99) if p99 is not None else None, least
    )


def _self_test(doc: Any) -> SelfTest:
    if not isinstance(doc, dict):
        raise _bad("self_test", doc, "an object")
    atol, rtol = doc.get("atol", 1e-3), doc.get("rtol", 1e-3)
    for what, value in (("atol", atol), ("rtol", rtol)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise _bad(f"self_test.{what}", value, "a number >= 0")
    engines = doc.get("engines") or {}
    if not isinstance(engines, dict) or not all(isinstance(e, dict) for e in engines.values()):
        raise _bad("self_test.engines", engines, 'an object of {"outputs": {...}} per engine')
    return SelfTest(
        inputs=_tensors(doc.get("inputs"), "self_test.inputs"),
        outputs=_tensors(doc.get("outputs"), "self_test.outputs"),
        atol=float(atol),
        rtol=float(rtol),
        by_engine={
            str(name): _tensors(e.get("outputs"), f"self_test.engines.{name}.outputs")
            for name, e in engines.items()
        },
    )


def _tensors(doc: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(doc, dict) or not doc:
        raise _bad(where, doc, "an object of named tensors")
    return {str(name): decode_tensor(spec, f"{where}.{name}") for name, spec in doc.items()}


def decode_tensor(spec: Any, where: str) -> np.ndarray:
    """``{"dtype", "shape", "b64"}`` (raw little-endian bytes, C order) as an array.

    Raises:
        UntrustedArtifactError: unknown dtype, bad shape, or a byte count that does not match.
    """
    if not isinstance(spec, dict):
        raise _bad(where, spec, '{"dtype", "shape", "b64"}')
    dtype, shape = spec.get("dtype"), spec.get("shape")
    if dtype not in _DTYPES:
        raise _bad(f"{where}.dtype", dtype, f"one of {', '.join(_DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _bad(f"{where}.shape", shape, "a list of sizes >= 0")
    try:
        raw = base64.b64decode(str(spec.get("b64", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"{where}.b64", spec.get("b64"), "base64") from exc
    dt = np.dtype(dtype).newbyteorder("<")
    if len(raw) != dt.itemsize * math.prod(shape):
        raise _bad(f"{where}.b64", f"{len(raw)} bytes", f"{dt.itemsize * math.prod(shape)} bytes")
    return np.frombuffer(raw, dtype=dt).reshape(shape).astype(np.dtype(dtype))


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    """The inverse of :func:`decode_tensor` (used by tools that build documents)."""
    a = np.ascontiguousarray(array)
    return {
        "dtype": str(a.dtype),
        "shape": list(a.shape),
        "b64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode(),
    }
