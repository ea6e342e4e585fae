"""Fleet monitoring: the nodes' drift monitors summed up per (model, version, node).

Two kinds of telemetry item feed it (docs/telemetry.md): a ``metrics`` item carries, per served
model, the node's monitor state (``monitoring``: drift ratios, alarm and quality counts, windowed
and estimated accuracy) beside the app's request counts and latency percentiles; an ``event``
item with a ``type`` (``drift`` / ``quality`` / ``degradation``) is one alarm. :func:`fold` turns
stored rows into :class:`Snapshot` / :class:`Mark` values (pure); :func:`apply` upserts them, each
only over an older one, so a duplicate or late item changes nothing; :func:`read` answers the
API. Latency, requests and errors are the node's whole app over the snapshot's window (the
agent measures them per app, not per model): every model of the node shows the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from edgeloop.control import tables
from edgeloop.control.fleet import iso
from edgeloop.core.errors import ConfigError
from edgeloop.serving.watch import EventType

FILTERS = ("model", "version", "node")
_MAX_FILTER = 128
# Telemetry items this process took, by outcome (the control plane's /metrics).
INGEST: Counter[str] = Counter()
_SNAPSHOT_KEYS = ("state", "samples_seen", "drifting", "drift_ratio", "alarms", "quality")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One metrics item's figures for one served version of one node."""

    node_id: str
    model: str
    version: str
    at: float
    figures: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Mark:
    """One monitor event (an alarm) of one served version of one node."""

    node_id: str
    model: str
    version: str
    at: float
    type: EventType
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Filters:
    """``GET /api/v1/monitoring``'s query: each None matches everything."""

    model: str | None = None
    version: str | None = None
    node: str | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Filters:
        """Raises ConfigError (400) naming an unknown or over-long field."""
        for key, value in params.items():
            if key not in FILTERS:
                raise ConfigError(
                    f"query field {key!r} is not known; expected one of {list(FILTERS)}",
                    hint="e.g. /api/v1/monitoring?model=digits&version=2&node=NODE_ID",
                )
            if not 1 <= len(value) <= _MAX_FILTER:
                raise ConfigError(
                    f"query field {key!r} has {len(value)} characters; expected 1 to {_MAX_FILTER}",
                    hint="leave a field out to match every value",
                )
        return cls(params.get("model"), params.get("version"), params.get("node"))


def _snapshots(node_id: str, payload: Mapping[str, Any], at: float) -> list[Snapshot]:
    app = {
        "requests": payload.get("requests"),
        "errors": payload.get("errors"),
        "p50_ms": payload.get("p50_ms"),
        "p99_ms": payload.get("p99_ms"),
        "window_s": payload.get("window_s"),
    }
    out = []
    watched = payload.get("monitoring")
    for model, doc in watched.items() if isinstance(watched, Mapping) else ():
        if not isinstance(doc, Mapping) or doc.get("version") is None:
            continue
        found = doc.get("performance")
        perf: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        figures = {k: doc.get(k) for k in _SNAPSHOT_KEYS}
        figures.update(
            labelled=perf.get("labelled"),
            windowed_accuracy=perf.get("accuracy"),
            estimated_accuracy=perf.get("estimated_accuracy"),
            **app,
        )
        out.append(Snapshot(node_id, str(model)[:128], str(doc["version"])[:32], at, figures))
    model, version = payload.get("model"), payload.get("model_version")
    if not out and model is not None and version is not None:  # served, not watched
        out.append(Snapshot(node_id, str(model)[:128], str(version)[:32], at, app))
    return out


def fold(node_id: str, rows: Iterable[Mapping[str, Any]]) -> list[Snapshot | Mark]:
    """The monitoring updates in stored telemetry rows (``telemetry.prepare``'s): metrics
    items' per-model figures and monitor events. Other rows, and rows of another shape, are
    skipped (telemetry accepts any JSON payload). Pure."""
    out: list[Snapshot | Mark] = []
    for row in rows:
        kind = row["kind"]
        if kind not in ("metrics", "event") or row["content_type"] != "application/json":
            continue
        payload = orjson.loads(row["payload"])
        if not isinstance(payload, dict):
            continue
        at = float(row["created_at"])
        if kind == "metrics":
            out.extend(_snapshots(node_id, payload, at))
            continue
        try:
            etype = EventType(str(payload.get("type")))
        except ValueError:
            continue  # an updater transition, not a monitor alarm
        model, version = payload.get("model"), payload.get("model_version")
        if model is None or version is None:
            continue
        out.append(Mark(node_id, str(model)[:128], str(version)[:32], at, etype, payload))
    return out


def newest(updates: Iterable[Snapshot | Mark]) -> tuple[list[Snapshot], list[Mark]]:
    """Per (node, model, version): the newest snapshot and the newest event of ``updates``
    (a batch holds many of one key; only the newest can win), and the newest drift event.
    Pure."""
    snaps: dict[tuple[str, str, str], Snapshot] = {}
    marks: dict[tuple[str, str, str, bool], Mark] = {}  # a drift event is kept beside another
    for u in updates:
        if isinstance(u, Snapshot):
            key = (u.node_id, u.model, u.version)
            if key not in snaps or snaps[key].at <= u.at:
                snaps[key] = u
            continue
        mkey = (u.node_id, u.model, u.version, u.type is EventType.DRIFT)
        if mkey not in marks or marks[mkey].at <= u.at:
            marks[mkey] = u
    return list(snaps.values()), sorted(marks.values(), key=lambda m: m.at)  # oldest first


_STATEMENTS: dict[str, tuple[Any, Any]] = {}  # per dialect: built once (cheaper per batch)


def _statements(conn: sa.Connection) -> tuple[Any, Any]:
    """The two upserts (executemany), each only over older figures of its kind."""
    found = _STATEMENTS.get(conn.dialect.name)
    if found is None:
        found = _STATEMENTS[conn.dialect.name] = _build(conn.dialect.name)
    return found


def _build(dialect: str) -> tuple[Any, Any]:
    t = tables.monitoring
    keys = [t.c.node_id, t.c.model, t.c.model_version]
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    snap = insert(t)
    snap = snap.on_conflict_do_update(
        index_elements=keys,
        set_={c: snap.excluded[c] for c in ("metrics_at", "snapshot", "received_at")},
        where=sa.or_(t.c.metrics_at.is_(None), t.c.metrics_at <= snap.excluded.metrics_at),
    )
    mark = insert(t)
    drift = sa.func.coalesce(mark.excluded.drift_event_at, t.c.drift_event_at)
    mark = mark.on_conflict_do_update(
        index_elements=keys,
        set_={
            **{c: mark.excluded[c] for c in ("event_at", "event", "received_at")},
            "drift_event_at": drift,
        },
        where=sa.or_(t.c.event_at.is_(None), t.c.event_at <= mark.excluded.event_at),
    )
    return snap, mark


def apply(conn: sa.Connection, updates: list[Snapshot | Mark], now: float) -> int:
    """Upsert the newest of ``updates`` per key in ``conn``'s transaction, each only over older
    figures of the same kind (a duplicate or late item changes nothing); the rows written."""
    snaps, marks = newest(updates)
    snap_stmt, mark_stmt = _statements(conn)

    def key(u: Snapshot | Mark) -> dict[str, Any]:
        return {"node_id": u.node_id, "model": u.model, "model_version": u.version,
                "received_at": now}  # fmt: skip

    if snaps:
        conn.execute(snap_stmt, [
            {**key(u), "metrics_at": u.at, "snapshot": orjson.dumps(u.figures).decode(),
             "event_at": None, "event": None, "drift_event_at": None}
            for u in snaps
        ])  # fmt: skip
    if marks:
        conn.execute(mark_stmt, [
            {**key(u), "metrics_at": None, "snapshot": None, "event_at": u.at,
             "event": orjson.dumps(u.event).decode(),
             "drift_event_at": u.at if u.type is EventType.DRIFT else None}
            for u in marks
        ])  # fmt: skip
    INGEST["monitoring_updates"] += len(snaps) + len(marks)
    return len(snaps) + len(marks)


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One node's view of one served version, as the API shows it."""

    node_id: str
    model: str
    version: str
    drifting: bool | None  # None: the version is not watched (no profile) on that node
    figures: Mapping[str, Any]
    last_event: Mapping[str, Any] | None
    metrics_at: float | None
    event_at: float | None
    received_at: float

    @property
    def error_rate(self) -> float | None:
        requests, errors = self.figures.get("requests"), self.figures.get("errors")
        return errors / requests if requests and errors is not None else None

    @property
    def estimated_accuracy(self) -> float | None:
        value = self.figures.get("estimated_accuracy")
        return float(value) if isinstance(value, int | float) else None

    def to_dict(self) -> dict[str, Any]:
        f = self.figures
        last = max(x for x in (self.metrics_at, self.event_at, 0.0) if x is not None)
        return {
            "node_id": self.node_id, "model": self.model, "version": self.version,
            "drifting": self.drifting, "drift_ratio": f.get("drift_ratio"),
            "monitor_state": f.get("state"), "samples_seen": f.get("samples_seen"),
            "alarms": f.get("alarms"), "quality": f.get("quality"),
            "labelled": f.get("labelled"), "windowed_accuracy": f.get("windowed_accuracy"),
            "estimated_accuracy": f.get("estimated_accuracy"),
            "latency_ms": {"p50": f.get("p50_ms"), "p99": f.get("p99_ms")},
            "requests": f.get("requests"), "errors": f.get("errors"),
            "error_rate": self.error_rate, "window_s": f.get("window_s"),
            "last_event": self.last_event, "metrics_at": iso(self.metrics_at),
            "last_seen": iso(last),
            "received_at": iso(self.received_at),
        }  # fmt: skip


def to_row(r: sa.Row[Any]) -> FleetRow:
    """A stored row as a :class:`FleetRow`: drifting when the newest snapshot says so, or when a
    drift event came after it."""
    figures = orjson.loads(r.snapshot) if r.snapshot else {}
    drifting = figures.get("drifting")
    if r.drift_event_at is not None and (r.metrics_at is None or r.drift_event_at > r.metrics_at):
        drifting = True
    return FleetRow(
        r.node_id, r.model, r.model_version, None if drifting is None else bool(drifting),
        figures, orjson.loads(r.event) if r.event else None, r.metrics_at, r.event_at,
        r.received_at,
    )  # fmt: skip


def read(conn: sa.Connection, filters: Filters = Filters()) -> list[FleetRow]:
    """The stored rows matching ``filters``, by model, version and node."""
    t = tables.monitoring
    q = sa.select(t).order_by(t.c.model, t.c.model_version, t.c.node_id)
    for value, column in ((filters.model, t.c.model), (filters.version, t.c.model_version),
                          (filters.node, t.c.node_id)):  # fmt: skip
        if value is not None:
            q = q.where(column == value)
    return [to_row(r) for r in conn.execute(q)]
