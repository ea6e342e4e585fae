"""Ground truth: labels posted for served requests, joined to what the model answered.

Every answered request of a watched model that carries a request id (``/predict``'s
``request_id``, generated when absent; the OIP request's ``id``) leaves an entry in a bounded,
expiring map ``(model, request_id) -> (version, predicted classes, time)``: at most
``label_capacity`` entries (the oldest go first), each kept ``label_ttl_s`` seconds. A label
takes its entry out of the map, so a request is labelled once and labels can never outnumber
answers: a flood of labels is bounded by the traffic it labels, and a batch body by
``label_batch_max`` items (413 past it). Requests of more than ``MAX_LABEL_ROWS`` rows are not
remembered (the map's memory stays bounded).

Bodies (``POST /v2/models/{m}/labels``, ``POST /predict/labels`` with ``"model"`` when several
are served, ``POST /predict/{m}/labels``)::

    {"request_id": "abc", "label": 3}                 one request (a list for a request of rows)
    {"labels": [{"request_id": "abc", "label": 3}, ...]}

Answers: 200 ``{"applied", "unknown", "unknown_ids"}``; 400 naming the field for a malformed
body or a label of a class the model lacks (nothing applied then); 404 for the single form
with an unknown or expired request id (the batch form counts those in ``unknown``); 409 for a
model served without a profile of its outputs (nothing to join to).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from edgeloop.core.errors import NotFoundError
from edgeloop.serving.errors import BadRequestError, PayloadTooLargeError

# Rows of one request the map remembers classes for: a larger request is not joinable (the map
# holds at most capacity x this many ints).
MAX_LABEL_ROWS = 256
_SHAPE_HINT = 'send {"request_id": ID, "label": CLASS} or {"labels": [{...}, ...]}'


@dataclass(frozen=True, slots=True)
class Served:
    """What one request was answered: by which version, which class per row, and when."""

    version: str
    predicted: tuple[int, ...]
    at: float


@dataclass(frozen=True, slots=True)
class Label:
    """One posted label: the request it is for and the true class of each of its rows."""

    request_id: str
    classes: tuple[int, ...]


class JoinMap:
    """The bounded, expiring map of answered requests (see the module docstring)."""

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple[str, str], Served] = OrderedDict()
        self.evicted = 0  # entries pushed out by newer ones before any label came
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, model: str, request_id: str, served: Served) -> None:
        key = (model, request_id)
        self._entries.pop(key, None)
        self._entries[key] = served
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1

    def peek(self, model: str, request_id: str, now: float | None = None) -> Served | None:
        """The entry if present and fresh (expired ones are dropped on the way)."""
        self._expire(time.monotonic() if now is None else now)
        return self._entries.get((model, request_id))

    def take(self, model: str, request_id: str) -> Served | None:
        return self._entries.pop((model, request_id), None)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, first = next(iter(self._entries.items()))
            if now - first.at <= self.ttl_s:
                return
            del self._entries[key]
            self.expired += 1


def parse_labels(body: bytes, batch_max: int) -> tuple[list[Label], bool, str | None]:
    """The labels of a body, whether it was the single form, and its ``"model"`` if named.

    Raises:
        BadRequestError: not JSON, or a field missing or of the wrong kind (named).
        PayloadTooLargeError: more than ``batch_max`` labels.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"the label body is not valid JSON: {exc}", hint=_SHAPE_HINT) from exc
    if not isinstance(doc, dict):
        raise BadRequestError("the label body must be a JSON object", hint=_SHAPE_HINT)
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequestError("'model' must be the name of a served model", hint=_SHAPE_HINT)
    if "labels" not in doc:
        return [_label(doc, "")], True, model
    items = doc["labels"]
    if not isinstance(items, list) or not items:
        raise BadRequestError("'labels' must be a non-empty list of objects", hint=_SHAPE_HINT)
    if len(items) > batch_max:
        raise PayloadTooLargeError(
            f"{len(items)} labels in one body; at most {batch_max} are taken",
            hint="split the labels into several requests",
        )
    return [_label(item, f"labels[{i}].") for i, item in enumerate(items)], False, model


def _label(doc: Any, where: str) -> Label:
    if not isinstance(doc, dict):
        raise BadRequestError(f"'{where.rstrip('.')}' must be an object", hint=_SHAPE_HINT)
    rid = doc.get("request_id")
    if isinstance(rid, bool) or not isinstance(rid, str | int) or rid == "":
        raise BadRequestError(
            f"'{where}request_id' must be a non-empty string (or an integer), got {rid!r:.60}",
            hint=_SHAPE_HINT,
        )
    raw = doc.get("label")
    values = raw if isinstance(raw, list) else [raw]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise BadRequestError(
            f"'{where}label' must be a class index (an int), or a list of them for a request "
            f"of several rows; got {raw!r:.60}",
            hint=_SHAPE_HINT,
        )
    return Label(str(rid), tuple(int(v) for v in values if isinstance(v, int)))


def check_label(label: Label, served: Served, classes: int, where: str) -> None:
    """Raises BadRequestError: a row count or a class that does not fit the served answer."""
    if len(label.classes) != len(served.predicted):
        raise BadRequestError(
            f"'{where}label' has {len(label.classes)} value(s); request "
            f"{label.request_id!r:.60} was answered for {len(served.predicted)} row(s)",
            hint="send one class index per row of the request",
        )
    for value in label.classes:
        if not 0 <= value < classes:
            raise BadRequestError(
                f"'{where}label' {value} is not a class of the model (it has {classes}: "
                f"0..{classes - 1})",
                hint="labels are class indices in the model's output order",
            )


def unknown_id(model: str, request_id: str) -> NotFoundError:
    return NotFoundError(
        f"no answer of model {model!r} with request_id {request_id!r:.60} is waiting for a "
        "label: unknown, expired, already labelled, or answered without a profile",
        hint="label a request within the server's label TTL, once, by the id it was answered with",
    )
