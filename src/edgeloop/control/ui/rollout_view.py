"""One rollout as its page shows it, read in a few queries whatever its size.

The API's view (:func:`edgeloop.control.rollout.to_dict`) reads each node's report with its own
query: ~1 ms a node, so a rollout over the whole of a 10,000-node fleet would take seconds, and
its page re-reads itself every 2 s while the rollout moves. Here the reports come in chunks of
``CHUNK`` ids per query, each node is judged by the same :func:`~edgeloop.control.guard.
check_node` the rollout engine uses, the verdicts are counted per wave, and at most ``SHOWN``
nodes are listed: failed first, then waiting, then healthy, each by wave and id. Reports
are read for the nodes a wave reached only, names for the nodes shown only.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Any

import orjson
import sqlalchemy as sa

from edgeloop.control import fleet, tables
from edgeloop.control.deployments import DeploymentSpec
from edgeloop.control.guard import check_node
from edgeloop.core.errors import NotFoundError

CHUNK = 500
SHOWN = 200
WAVE_NAMES = 12  # a wave lists its nodes' names up to this many
_ORDER = {"failed": 0, "waiting": 1, "not reached": 2, "healthy": 3}


@dataclass(frozen=True, slots=True)
class NodeLine:
    node_id: str
    name: str
    wave: int
    ref: str | None
    revision: int | None
    verdict: str  # healthy / waiting / failed, or "not reached" before its wave
    detail: str


@dataclass(frozen=True, slots=True)
class RolloutView:
    rollout_id: str
    name: str
    model: str
    state: str
    wave: int
    waves: list[list[str]]
    counts: list[dict[str, int]]  # per wave: verdict -> nodes
    nodes: list[NodeLine]  # at most SHOWN, worst first
    total_nodes: int
    events: list[tuple[str | None, str, str]]  # (at, state, detail), oldest first
    names: dict[str, str]  # node id -> name of the nodes listed and of each wave's first few


def read(conn: sa.Connection, rollout_id: str) -> RolloutView:
    """Raises NotFoundError when there is no such rollout."""
    t = tables.rollouts
    row = conn.execute(sa.select(t).where(t.c.rollout_id == rollout_id)).first()
    if row is None:
        raise NotFoundError(
            f"rollout {rollout_id!r} does not exist", hint="the rollouts page lists them"
        )
    body = orjson.loads(row.spec)
    spec = DeploymentSpec.from_dict(body["spec"])
    entries: dict[str, dict[str, Any]] = body["entries"]
    waves: list[list[str]] = orjson.loads(row.waves)
    info: dict[str, dict[str, Any]] = orjson.loads(row.nodes)
    reached = [node_id for node_id, n in info.items() if n["revision"] is not None]
    reports = _reports(conn, reached)
    counts: list[dict[str, int]] = [{} for _ in waves]
    # (order, wave, node id, verdict, detail): a plain tuple per node, a line for those shown
    keys: list[tuple[int, int, str, str, str]] = []
    for node_id, n in info.items():
        verdict, detail = "not reached", ""
        if n["revision"] is not None:
            sha = entries[n["ref"]]["sha256"]
            check = check_node(reports.get(node_id), int(n["revision"]), sha, spec.plan.guard)
            verdict, detail = check.verdict.value, check.detail
        wave = int(n["wave"])
        if 0 <= wave < len(counts):
            counts[wave][verdict] = counts[wave].get(verdict, 0) + 1
        keys.append((_ORDER.get(verdict, 9), wave, node_id, verdict, detail))
    lines = [
        NodeLine(node_id, node_id, wave, info[node_id]["ref"], info[node_id]["revision"], v, d)
        for _, wave, node_id, v, d in heapq.nsmallest(SHOWN, keys)
    ]
    named = {x.node_id for x in lines} | {i for ids in waves for i in ids[:WAVE_NAMES]}
    names = _names(conn, sorted(named))
    lines = [replace(x, name=names.get(x.node_id, x.node_id)) for x in lines]
    e = tables.rollout_events
    events = [
        (fleet.iso(r.at), r.state, r.detail)
        for r in conn.execute(
            sa.select(e.c.at, e.c.state, e.c.detail)
            .where(e.c.rollout_id == rollout_id)
            .order_by(e.c.event_id)
        )
    ]
    return RolloutView(
        row.rollout_id,
        spec.name,
        str(spec.model),
        row.state,
        int(row.wave),
        waves,
        counts,
        lines[:SHOWN],
        len(info),
        events,
        names,
    )


def _reports(conn: sa.Connection, node_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each node's last report, ``CHUNK`` ids per query."""
    n = tables.nodes.c
    reports: dict[str, dict[str, Any]] = {}
    for i in range(0, len(node_ids), CHUNK):
        query = sa.select(n.node_id, n.reported).where(n.node_id.in_(node_ids[i : i + CHUNK]))
        for r in conn.execute(query):
            if r.reported is not None:
                reports[r.node_id] = dict(orjson.loads(r.reported))
    return reports


def _names(conn: sa.Connection, node_ids: list[str]) -> dict[str, str]:
    """Each node's name as the fleet page shows it (its id when it has none)."""
    n = tables.nodes.c
    names: dict[str, str] = {}
    for i in range(0, len(node_ids), CHUNK):
        query = sa.select(n.node_id, n.name).where(n.node_id.in_(node_ids[i : i + CHUNK]))
        names.update((r.node_id, str(r.name or r.node_id)) for r in conn.execute(query))
    return names
