"""What a round's selector sees of each node: fleet status, read from the control plane's rows.

==========================  ===============================================================
``online``                  its federated worker polled in the last ``ELIGIBLE_S`` seconds
                            (``control_fl_clients.last_poll``)
``num_samples``             the training examples its worker said it holds (same row)
``power``, ``battery``      what its worker's last poll said (``control_fl_power``; the node
                            reads the kernel's power-supply class, agent/fl_policy.py)
``device_class``            from its enrollment's capability probe (``control_nodes``)
``load_per_core``           its last report's 1-minute load average / its logical cores
``memory_available_mb``     its last report's ``MemAvailable`` (``control_nodes.reported``)
``last_selected``           the last round of this task it was selected for (the history)
==========================  ===============================================================

A figure a node did not send is None (the selector then does not refuse the node for it).
Every node whose worker ever polled with training data is a candidate, the offline ones too,
so the round's log says why each was or was not asked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from edgeloop.control import fl_store as st
from edgeloop.control import tables
from edgeloop.federated.selection import Candidate, PowerSource

ELIGIBLE_S = 15.0  # a worker that polled this recently is online (it polls every <= 5 s)


def candidates(
    conn: sa.Connection, now: float, history: Sequence[dict[str, Any]]
) -> list[Candidate]:
    """Every node whose worker polled with training data, by node id."""
    c, p, n = st.clients, st.power, tables.nodes
    q = (
        sa.select(c, p.c.source, p.c.battery, n.c.device_class, n.c.capabilities, n.c.reported)
        .select_from(c.outerjoin(p, p.c.node_id == c.c.node_id))
        .outerjoin(n, n.c.node_id == c.c.node_id)
        .where(c.c.train_samples > 0)
        .order_by(c.c.node_id)
    )
    last = {node: h["round"] for h in history for node in h["selected"]}
    return [_candidate(r, now, last.get(r.node_id)) for r in conn.execute(q)]


def _candidate(row: Any, now: float, last_selected: int | None) -> Candidate:
    resources = _json(row.reported).get("resources") or {}
    cores = _json(row.capabilities).get("cpu_count")
    load = _number(resources.get("load_1m"))
    per_core = None
    if load is not None and isinstance(cores, int) and cores > 0:
        per_core = load / cores
    battery = row.battery if row.battery is not None and 0.0 <= row.battery <= 1.0 else None
    return Candidate(
        row.node_id,
        online=row.last_poll >= now - ELIGIBLE_S,
        device_class=row.device_class or "unknown",
        power=PowerSource(row.source) if row.source else PowerSource.UNKNOWN,
        battery=battery,
        num_samples=int(row.train_samples),
        last_selected=last_selected,
        load_per_core=per_core,
        memory_available_mb=_number(resources.get("memory_available_mb")),
    )


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def record_power(
    conn: sa.Connection, node_id: str, source: PowerSource, battery: float | None, now: float
) -> None:
    """Store the power state a worker's poll carried."""
    p = st.power
    values = {"source": source.value, "battery": battery, "updated_at": now}
    if conn.execute(p.update().where(p.c.node_id == node_id).values(values)).rowcount == 0:
        conn.execute(p.insert().values(node_id=node_id, **values))
