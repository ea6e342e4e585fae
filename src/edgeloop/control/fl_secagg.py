"""Secure aggregation across agents: the control plane's side of a round's four steps.

Bonawitz et al. 2017 as :mod:`edgeloop.federated.secagg` implements it, with the control plane as
the server that only relays and sums. The selected clients are numbered 1..n in selection
order. A round with ``secagg`` moves through steps, each closing when every client expected in
it answered or the round's deadline passed since the step began:

=============  =====================================  ====================================
step           each client posts (``X-Fl-Update``)    the step's answerers form
=============  =====================================  ====================================
``advertise``  its two X25519 public keys (64 bytes)  U1 (need >= t)
``share``      sealed Shamir shares, one per U1 peer  U2 (need >= t)
``mask``       y = encode([n x, n]) + masks (uint64)  U3 (need >= t); the rest of U2 dropped
``unmask``     b-shares of U3, s-shares of U2 - U3    >= t responses: the sum is unmasked
=============  =====================================  ====================================

The server stores masked vectors and sealed shares only: it never sees a client's weights or
its sample count, only sum n x and sum n after unmasking, i.e. the FedAvg mean. Clients that
drop after sending y stay in the sum (their self mask is rebuilt from the others' shares).
Clients' local metrics (loss, held-out accuracy) are sent in the clear beside y.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from edgeloop.control import fl_store as st
from edgeloop.core.errors import ConflictError, DataError
from edgeloop.federated.secagg import (
    FixedPoint,
    KeyAdvert,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
    fedavg_from_sum,
    unmask_sum,
)

STEPS = ("advertise", "share", "mask", "unmask")
ENCODING = FixedPoint(frac_bits=24)  # error <= n * 2^-25 per coordinate of sum n x
_NEXT = {"advertise": "u1", "share": "u2", "mask": "u3"}


def start(selected: Sequence[str], min_clients: int) -> dict[str, Any]:
    """The SecAgg state of a round that selected ``selected``: threshold t = max(min_clients,
    floor(n/2) + 1), so a majority is needed to unmask anything."""
    n = len(selected)
    index = {node: i + 1 for i, node in enumerate(selected)}
    threshold = min(n, max(min_clients, n // 2 + 1))
    return {"step": "advertise", "index": index, "threshold": threshold, "u1": [], "u2": [],
            "u3": []}  # fmt: skip


def _rows(conn: sa.Connection, task_id: str, round: int, kind: str) -> list[Any]:
    m = st.messages
    q = sa.select(m).where(m.c.task_id == task_id, m.c.round == round, m.c.kind == kind)
    return list(conn.execute(q.order_by(m.c.node_id)))


def expected(state: Mapping[str, Any], selected: Sequence[str]) -> list[str]:
    """Who must answer the current step."""
    who = {"advertise": selected, "share": state["u1"], "mask": state["u2"], "unmask": state["u3"]}
    return list(who[state["step"]])


def answered(conn: sa.Connection, task_id: str, round: int, step: str) -> list[str]:
    """Who sent ``step`` (node ids only: a masked input is 8 bytes a parameter, and every
    waiting node's poll asks this)."""
    m = st.messages
    q = sa.select(m.c.node_id).where(m.c.task_id == task_id, m.c.round == round, m.c.kind == step)
    return [str(r[0]) for r in conn.execute(q.order_by(m.c.node_id))]


def _adverts(conn: sa.Connection, task_id: str, round: int, index: Mapping[str, int]) -> list[Any]:
    return [
        {"index": index[r.node_id], "cipher_public": base64.b64encode(r.payload[:32]).decode(),
         "mask_public": base64.b64encode(r.payload[32:]).decode()}
        for r in _rows(conn, task_id, round, "advertise")
    ]  # fmt: skip


def _inbox(conn: sa.Connection, task_id: str, round: int, state: Mapping[str, Any], me: int) -> Any:
    """The sealed shares addressed to client ``me`` by U2's members: sender index -> base64."""
    index = state["index"]
    out = {}
    for r in _rows(conn, task_id, round, "share"):
        if r.node_id in state["u2"]:
            sealed = json.loads(r.payload)
            if str(me) in sealed:
                out[str(index[r.node_id])] = sealed[str(me)]
    return out


def assignment(conn: sa.Connection, row: Any, node_id: str) -> dict[str, Any] | None:
    """What ``node_id`` must send in the current step (None: nothing, or sent already)."""
    state = json.loads(row.secagg)
    step = state["step"]
    if node_id not in expected(state, json.loads(row.selected)):
        return None
    if node_id in answered(conn, row.task_id, row.round, step):
        return None
    me = state["index"][node_id]
    doc: dict[str, Any] = {"step": step, "index": me, "threshold": state["threshold"]}
    if step != "advertise":
        doc["adverts"] = _adverts(conn, row.task_id, row.round, state["index"])
    if step in ("mask", "unmask"):
        doc["inbox"] = _inbox(conn, row.task_id, row.round, state, me)
        doc["clients"] = len(state["u2"])
        doc["frac_bits"] = ENCODING.frac_bits
    if step == "unmask":
        idx = state["index"]
        doc["survivors"] = sorted(idx[n] for n in state["u3"])
        doc["dropped"] = sorted(idx[n] for n in state["u2"] if n not in state["u3"])
    return doc


def put(conn: sa.Connection, row: Any, node_id: str, header: Mapping[str, Any], body: bytes,
        num_params: int, now: float) -> None:  # fmt: skip
    """Store a client's message for the current step.

    Raises:
        ConflictError: another step, a client not expected in it, or a second message.
        DataError: a body of the wrong size or form for the step.
    """
    state = json.loads(row.secagg)
    step = header.get("secagg")
    if step != state["step"]:
        raise ConflictError(
            f"round {row.round} of task {row.task_id} is at SecAgg step {state['step']!r}, "
            f"not {step!r}; the message was not taken"
        )
    if node_id not in expected(state, json.loads(row.selected)):
        raise ConflictError(f"node {node_id} is not expected at step {step!r} of this round")
    if node_id in answered(conn, row.task_id, row.round, step):
        raise ConflictError(f"node {node_id} already sent step {step!r} of this round")
    _check_body(step, body, num_params)
    try:
        metrics = {str(k): float(v) for k, v in dict(header.get("metrics") or {}).items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"SecAgg message metrics must be numbers ({exc})") from exc
    conn.execute(st.messages.insert().values(
        task_id=row.task_id, round=row.round, node_id=node_id, kind=step, received_at=now,
        num_samples=0, bytes=len(body), payload=body, metrics=json.dumps(metrics),
    ))  # fmt: skip


def _check_body(step: str, body: bytes, num_params: int) -> None:
    if step == "advertise" and len(body) != 64:
        raise DataError(f"a key advert is 64 bytes (two X25519 public keys), got {len(body)}")
    if step == "mask" and len(body) != 8 * (num_params + 1):
        raise DataError(
            f"a masked input is {8 * (num_params + 1)} bytes ({num_params} + 1 uint64), got "
            f"{len(body)}"
        )
    if step in ("share", "unmask"):
        what = "base64 sealed shares" if step == "share" else "decimal share"
        try:
            doc = json.loads(body)
            maps = [doc] if step == "share" else [doc.get(k, {}) for k in _UNMASK_KEYS]
            if not isinstance(doc, dict) or (step == "unmask" and set(doc) - set(_UNMASK_KEYS)):
                raise TypeError("not the expected object")
            for part in maps:
                for k, v in dict(part).items():
                    int(k)
                    _ = base64.b64decode(v, validate=True) if step == "share" else int(v)
        except (ValueError, TypeError, AttributeError) as exc:
            raise DataError(
                f"a SecAgg {step!r} message is a JSON object of client index -> {what}: {exc}"
            ) from exc


_UNMASK_KEYS = ("self_mask_shares", "key_shares")


def advance(
    conn: sa.Connection, row: Any, state: dict[str, Any], late: bool
) -> tuple[dict[str, Any], str | None, bool]:
    """(new state, failure reason, moved): the step is over when all expected clients answered
    or ``late``; fewer answers than t fail the round. At ``unmask``, moved means: unmask now."""
    step = state["step"]
    want = expected(state, json.loads(row.selected))
    got = answered(conn, row.task_id, row.round, step)
    if not (set(want) <= set(got) or late):
        return state, None, False
    if len(got) < state["threshold"]:
        return state, (f"SecAgg step {step!r}: {len(got)} of {len(want)} clients answered, the "
                       f"threshold is t={state['threshold']}"), False  # fmt: skip
    if step == "unmask":
        return state, None, True
    return {**state, _NEXT[step]: got, "step": STEPS[STEPS.index(step) + 1]}, None, True


def unmask(conn: sa.Connection, row: Any, state: Mapping[str, Any]) -> tuple[Any, float]:
    """The FedAvg mean sum n x / sum n and sum n, from the masked inputs and the responses.

    Raises:
        TransportError: fewer than t responses or shares (the sum cannot be recovered).
    """
    index = state["index"]
    adverts = [
        KeyAdvert(index[r.node_id], bytes(r.payload[:32]), bytes(r.payload[32:]))
        for r in _rows(conn, row.task_id, row.round, "advertise")
    ]
    masked = [
        MaskedInput(index[r.node_id], np.frombuffer(r.payload, dtype="<u8").astype(np.uint64))
        for r in _rows(conn, row.task_id, row.round, "mask")
        if r.node_id in state["u3"]
    ]
    survivors = frozenset(index[n] for n in state["u3"])
    dropped = frozenset(index[n] for n in state["u2"]) - survivors
    responses = []
    for r in _rows(conn, row.task_id, row.round, "unmask"):
        doc = json.loads(r.payload)
        responses.append(UnmaskResponse(
            index[r.node_id],
            {int(k): int(v) for k, v in doc.get("self_mask_shares", {}).items()},
            {int(k): int(v) for k, v in doc.get("key_shares", {}).items()},
        ))  # fmt: skip
    total = unmask_sum(adverts, masked, UnmaskRequest(survivors, dropped), responses,
                       state["threshold"])  # fmt: skip
    return fedavg_from_sum(total, ENCODING)


def client_metrics(conn: sa.Connection, row: Any) -> list[dict[str, float]]:
    """The metrics the survivors sent beside their masked inputs."""
    return [json.loads(r.metrics) for r in _rows(conn, row.task_id, row.round, "mask")]


def mean_metric(metrics: Sequence[Mapping[str, float]], key: str) -> float | None:
    """The unweighted mean over clients (sample counts stay hidden under SecAgg)."""
    values = [m[key] for m in metrics if key in m and math.isfinite(m[key])]
    return sum(values) / len(values) if values else None
