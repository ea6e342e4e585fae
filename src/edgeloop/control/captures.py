"""Captured samples from the fleet, assembled into a data set version.

Nodes ship what their capture policy kept (:mod:`edgeloop.serving.capture_sink`) as telemetry
items of kind ``capture``: ``{"type": "sample", ...}`` rows and ``{"type": "label", ...}``
labels posted later for them. :func:`read` picks the rows of one model (optionally one
version, some nodes, some reasons, a time range of when the nodes queued them) and every label
for them; :func:`assemble` turns them into a :class:`SampleSet` (x from the first input, the
served prediction and confidence, the label where one was posted) and its :class:`Provenance`
(nodes, model version(s), reasons, first and last capture). Storing it
(:class:`~edgeloop.registry.dataset_library.DatasetLibrary`) makes an immutable version.

A sample's id is its ``sample_id`` (the request id, ``#row`` for a row of a batch); when two
nodes captured the same id (clients reuse request ids), the later ones get ``@node_id``.
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from edgeloop.control import tables
from edgeloop.core.errors import DataError
from edgeloop.data.dataset import Modality
from edgeloop.data.samples import NO_PREDICTION, UNLABELLED, SampleSet
from edgeloop.registry.datasets import Provenance

MAX_ITEMS = 200_000  # capture items read for one data set (rows and labels)
_MODALITY = {1: Modality.TABULAR, 2: Modality.SIGNAL, 3: Modality.IMAGE}


@dataclass(frozen=True, slots=True)
class CaptureQuery:
    """Which captured rows: one model, optionally a version, nodes, reasons and a time range
    (Unix seconds; ``until`` excluded)."""

    model: str
    version: str | None = None
    nodes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class Captured:
    """One stored ``sample`` record and the node that sent it."""

    node_id: str
    record: Mapping[str, Any]


def read(
    conn: sa.Connection, query: CaptureQuery
) -> tuple[list[Captured], dict[tuple[str, str], int]]:
    """The matching rows, oldest first, and every label for the model by (node, sample id).

    Raises:
        DataError: more than ``MAX_ITEMS`` capture items match (narrow the time range).
    """
    t = tables.telemetry
    q = sa.select(t.c.node_id, t.c.created_at, t.c.payload).where(
        t.c.kind == "capture", t.c.model == query.model
    )
    if query.nodes:
        q = q.where(t.c.node_id.in_(query.nodes))
    rows = conn.execute(q.order_by(t.c.created_at, t.c.item_id).limit(MAX_ITEMS + 1)).all()
    if len(rows) > MAX_ITEMS:
        raise DataError(
            f"more than {MAX_ITEMS} capture items of model {query.model!r}; one data set is "
            "assembled from at most that many",
            hint="narrow it with since/until (or version, nodes)",
        )
    samples: list[Captured] = []
    labels: dict[tuple[str, str], int] = {}
    for node_id, created_at, payload in rows:
        record = json.loads(payload)
        if not isinstance(record, dict):
            continue
        if record.get("type") == "label":
            if isinstance(record.get("label"), int):
                labels[(node_id, str(record.get("sample_id")))] = int(record["label"])
        elif record.get("type") == "sample" and wanted(query, created_at, record):
            samples.append(Captured(node_id, record))
    return samples, labels


def wanted(query: CaptureQuery, at: float, record: Mapping[str, Any]) -> bool:
    """Whether a ``sample`` record queued (or captured) at ``at`` matches ``query``."""
    if query.version is not None and str(record.get("model_version")) != query.version:
        return False
    if query.since is not None and at < query.since:
        return False
    if query.until is not None and at >= query.until:
        return False
    return not query.reasons or bool(set(query.reasons) & set(record.get("reasons") or ()))


@dataclass(frozen=True, slots=True)
class Assembled:
    """The samples, their provenance and what was counted on the way."""

    samples: SampleSet
    provenance: Provenance
    by_reason: Mapping[str, int]
    by_node: Mapping[str, int]
    versions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": len(self.samples),
            "labelled": self.samples.labelled,
            "by_reason": dict(self.by_reason),
            "by_node": dict(self.by_node),
            "model_versions": list(self.versions),
        }


def tensor_values(tensor: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """A captured tensor's values as float32: ``b64`` (its bytes, ``datatype`` a numpy dtype
    string) or a ``data`` list. Raises ValueError / TypeError."""
    if "b64" in tensor:
        raw = base64.b64decode(str(tensor["b64"]), validate=True)
        return np.frombuffer(raw, dtype=np.dtype(str(tensor["datatype"]))).astype(np.float32)
    return np.asarray(tensor.get("data"), dtype=np.float32).reshape(-1)


def _first_input(where: str, record: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    tensors = record.get("inputs")
    if not isinstance(tensors, list) or len(tensors) != 1 or not isinstance(tensors[0], dict):
        raise DataError(
            f"{where} has {len(tensors) if isinstance(tensors, list) else 'no'} input tensors; "
            "a data set version holds samples of one input",
            hint="capture a single-input model, or export the captures and split them yourself",
        )
    tensor = tensors[0]
    shape = [int(d) for d in tensor.get("shape", [])]
    try:
        values = tensor_values(tensor)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: its input tensor cannot be read: {exc}") from exc
    if len(shape) < 2 or math.prod(shape) != values.size:
        raise DataError(f"{where}: input shape {shape} does not hold {values.size} values")
    return values.reshape(shape[1:])


def assemble(
    query: CaptureQuery,
    captured: Iterable[Captured],
    labels: Mapping[tuple[str, str], int],
    classes: tuple[str, ...],
) -> Assembled:
    """The captured rows as one :class:`SampleSet` with its :class:`Provenance`.

    Raises:
        DataError: no rows, rows of different sample shapes (named), more inputs than one.
    """
    x: list[np.ndarray[Any, Any]] = []
    y: list[int] = []
    ids: list[str] = []
    pred: list[int] = []
    conf: list[float] = []
    seen: set[str] = set()
    by_reason: Counter[str] = Counter()
    by_node: Counter[str] = Counter()
    versions: set[str] = set()
    times: list[datetime] = []
    for item in captured:
        r = item.record
        sid = str(r.get("sample_id") or r.get("request_id"))
        where = f"capture {sid!r} from node {item.node_id}"
        row = _first_input(where, r)
        if x and row.shape != x[0].shape:
            raise DataError(
                f"{where} has samples of shape {list(row.shape)}, the first has {list(x[0].shape)}",
                hint="assemble one model version at a time (version=...)",
            )
        label = labels.get((item.node_id, sid), UNLABELLED)
        predicted = r.get("predicted")
        x.append(row)
        y.append(label if 0 <= label < len(classes) else UNLABELLED)
        ids.append(sid if sid not in seen else f"{sid}@{item.node_id}")
        seen.add(ids[-1])
        known = isinstance(predicted, int) and 0 <= predicted < len(classes)
        pred.append(int(predicted) if known and predicted is not None else NO_PREDICTION)
        confidence = r.get("confidence")
        conf.append(float(confidence) if isinstance(confidence, int | float) else np.nan)
        by_reason.update(str(reason) for reason in r.get("reasons") or ())
        by_node[item.node_id] += 1
        versions.add(str(r.get("model_version")))
        times.append(datetime.fromisoformat(str(r.get("at"))).astimezone(UTC))
    if not x:
        raise DataError(
            f"no captured samples of model {query.model!r} match"
            + (f" (version {query.version})" if query.version else "")
            + (f" (reasons {', '.join(query.reasons)})" if query.reasons else ""),
            hint="check that a capture policy is deployed (serving.capture) and that the "
            "nodes shipped their telemetry; widen since/until",
        )
    samples = SampleSet(
        np.stack(x).astype(np.float32),
        np.asarray(y, np.int64),
        tuple(ids),
        classes,
        _MODALITY.get(x[0].ndim, Modality.TABULAR),
        np.asarray(pred, np.int64),
        np.asarray(conf, np.float32),
    )
    provenance = Provenance(
        node_ids=tuple(sorted(by_node)),
        model=query.model,
        reasons=tuple(sorted(by_reason)),
        time_range=(min(times), max(times)),
        note=f"captured by model {query.model} version(s) {', '.join(sorted(versions))}",
    )
    return Assembled(samples, provenance, by_reason, by_node, tuple(sorted(versions)))


def class_names(labels: tuple[str, ...], width: int | None) -> tuple[str, ...]:
    """The model's class names (its manifest's ``labels``) or ``0..width-1``."""
    if labels and (width is None or len(labels) == width):
        return labels
    return tuple(str(i) for i in range(width or 1))


def output_width(found: list[Captured]) -> int | None:
    """Values per row of the first output of the first captured row (its class count)."""
    if not found:
        return None
    outputs: Any = found[0].record.get("outputs")
    try:
        return math.prod(int(d) for d in outputs[0]["shape"][1:])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
