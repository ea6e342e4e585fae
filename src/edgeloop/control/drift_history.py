"""Drift over time per model version, kept as telemetry arrives (docs/ui.md, "Drift over time").

:func:`record` runs in the transaction that stores a batch of telemetry items
(``telemetry.store_rows``), with the batch's monitoring updates (``monitoring.fold``): it adds
the batch's figures to one ``control_drift_history`` row per version and minute (``BIN_S``,
epoch-aligned), an upsert each: the largest drift ratio, the sums and counts of windowed and
estimated accuracy, the reports, the alarms. The dashboard's chart reads those rows (at most
1,440 of a version in 24 hours) instead of the raw items.

Nodes reporting / drifting count a node once per minute: a report adds the node to its minute's
``nodes_reporting`` when that minute is later than the last minute the node was counted in for
that version (``control_drift_counted``), and to ``nodes_drifting`` likewise when it says
drifting. A report older than one already counted (a late, out-of-order item) adds its figures
but not its node. Rows older than ``RETENTION_S`` are pruned, at most once a minute per process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from edgeloop.control import tables
from edgeloop.control.monitoring import Mark, Snapshot

BIN_S = 60.0
RETENTION_S = 7 * 24 * 3600.0
PRUNE_EVERY_S = 60.0
_pruned = {"at": 0.0}
_MEANS = (("windowed_accuracy", "windowed_sum", "windowed_count"),
          ("estimated_accuracy", "estimated_sum", "estimated_count"))  # fmt: skip
_STATEMENTS: dict[str, tuple[Any, Any]] = {}
_SUMS = ("nodes_drifting", "nodes_reporting", "reports", "reports_watched", "windowed_sum",
         "windowed_count", "estimated_sum", "estimated_count", "alarms")  # fmt: skip


def ratio(figures: Mapping[str, Any]) -> float | None:
    """The largest drift ratio of one snapshot (over the input, prediction and confidence
    checks), or None when it carries none (a version watched without a profile)."""
    found = figures.get("drift_ratio")
    if not isinstance(found, Mapping):
        return None
    values = [float(v) for v in found.values() if _number(v) is not None]
    return max(values) if values else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _bin(at: float) -> float:
    return math.floor(at / BIN_S) * BIN_S


def _blank(model: str, version: str, start: float) -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "model_version": version, "bin_start": start}
    row.update({k: 0 for k in _SUMS}, drift_ratio_max=None)
    return row


def _statements(dialect: str) -> tuple[Any, Any]:
    found = _STATEMENTS.get(dialect)
    if found is not None:
        return found
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    h = tables.drift_history
    up = insert(h)
    new, old = up.excluded.drift_ratio_max, h.c.drift_ratio_max
    larger = sa.case((new.is_(None), old), (sa.or_(old.is_(None), new > old), new), else_=old)
    up = up.on_conflict_do_update(
        index_elements=[h.c.model, h.c.model_version, h.c.bin_start],
        set_={"drift_ratio_max": larger, **{k: h.c[k] + up.excluded[k] for k in _SUMS}},
    )
    c = tables.drift_counted
    counted = insert(c)
    counted = counted.on_conflict_do_update(
        index_elements=[c.c.node_id, c.c.model, c.c.model_version],
        set_={k: counted.excluded[k] for k in ("reported_bin", "drifting_bin")},
    )
    _STATEMENTS[dialect] = (up, counted)
    return up, counted


def record(
    conn: sa.Connection, node_id: str, updates: Sequence[Snapshot | Mark], now: float
) -> int:
    """Add one node's batch of monitoring updates to the history; the rows upserted."""
    since = now - RETENTION_S
    snaps = sorted((u for u in updates if isinstance(u, Snapshot) and u.at >= since),
                   key=lambda s: s.at)  # fmt: skip
    marks = [u for u in updates if isinstance(u, Mark) and u.at >= since]
    if not snaps and not marks:
        return 0
    c = tables.drift_counted
    state: dict[tuple[str, str], list[float | None]] = {}
    if snaps:
        found = conn.execute(
            sa.select(c.c.model, c.c.model_version, c.c.reported_bin, c.c.drifting_bin).where(
                c.c.node_id == node_id
            )
        )
        state = {(m, v): [r, d] for m, v, r, d in found}
    bins: dict[tuple[str, str, float], dict[str, Any]] = {}
    touched: set[tuple[str, str]] = set()
    for s in snaps:
        start = _bin(s.at)
        row = bins.get((s.model, s.version, start))
        if row is None:
            row = bins[(s.model, s.version, start)] = _blank(s.model, s.version, start)
        last = state.setdefault((s.model, s.version), [None, None])
        touched.add((s.model, s.version))
        if last[0] is None or start > last[0]:
            row["nodes_reporting"] += 1
            last[0] = start
        drifting = s.figures.get("drifting")
        if drifting and (last[1] is None or start > last[1]):
            row["nodes_drifting"] += 1
            last[1] = start
        row["reports"] += 1
        row["reports_watched"] += drifting is not None
        r = ratio(s.figures)
        if r is not None and (row["drift_ratio_max"] is None or r > row["drift_ratio_max"]):
            row["drift_ratio_max"] = r
        for key, total, count in _MEANS:
            value = _number(s.figures.get(key))
            if value is not None:
                row[total] += value
                row[count] += 1
    for m in marks:
        start = _bin(m.at)
        row = bins.get((m.model, m.version, start))
        if row is None:
            row = bins[(m.model, m.version, start)] = _blank(m.model, m.version, start)
        row["alarms"] += 1
    up, counted = _statements(conn.dialect.name)
    conn.execute(up, [bins[k] for k in sorted(bins)])  # one lock order: no deadlock on PostgreSQL
    if touched:
        conn.execute(counted, [
            {"node_id": node_id, "model": m, "model_version": v,
             "reported_bin": state[(m, v)][0], "drifting_bin": state[(m, v)][1]}
            for m, v in sorted(touched)
        ])  # fmt: skip
    if marks:
        conn.execute(tables.drift_alarms.insert(), [
            {"model": m.model, "model_version": m.version, "at": m.at, "node_id": node_id,
             "type": m.type.value}
            for m in marks
        ])  # fmt: skip
    prune(conn, now)
    return len(bins)


def prune(conn: sa.Connection, now: float, force: bool = False) -> None:
    """Delete history and alarms older than ``RETENTION_S`` (at most once per
    ``PRUNE_EVERY_S`` in this process unless ``force``)."""
    if not force and time.monotonic() - _pruned["at"] < PRUNE_EVERY_S:
        return
    _pruned["at"] = time.monotonic()
    cut = now - RETENTION_S
    conn.execute(tables.drift_history.delete().where(tables.drift_history.c.bin_start < cut))
    conn.execute(tables.drift_alarms.delete().where(tables.drift_alarms.c.at < cut))
