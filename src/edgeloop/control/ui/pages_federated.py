"""The federated-task pages: every task, and one with its rounds, participants and epsilon.

They read the status documents ``GET /api/v1/fl/tasks[/{id}]`` answer
(:func:`edgeloop.control.fl_wire.summary` and :func:`~edgeloop.control.fl_wire.to_dict`) in a
read transaction: moving a task's rounds on is the federated routes' own loop, not a page's.
The list keeps each task's row, decoded, per (task id, ``updated_at``): a task's history is its
JSON of every round (hundreds of kB after 50 rounds), so the list decodes only the tasks that
changed since it was last shown (:class:`Summaries`).
A round's accuracy and loss are what the clients measured on that round's resulting model
(they score it at the start of the next round, or in the final evaluation).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import fl_store, fl_wire
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui.html import Html, join, url
from edgeloop.control.ui.layout import View
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import badge, code, figure, link, note, pairs, section, table, when

ROUND_HEADS = (
    "Round",
    "Selected",
    "Participants",
    "Dropouts",
    "Rejected",
    "Accuracy",
    "Loss",
    "Eval samples",
    "Epsilon",
    "Closed",
)


# How app.js draws the rounds: x is the round number, not a time.
CHART = {
    "time": False,
    "x": "round",
    "empty": "No round has been scored yet.",
    "series": [["accuracy", "accuracy", "#0b5cad", "acc"], ["loss", "loss", "#116329", "loss"]],
}


class Summaries:
    """Each task's list row (:func:`edgeloop.control.fl_wire.summary`), kept per task id with
    the ``updated_at`` it was read at: every write of the fields a list row shows goes through
    ``fl_rounds.save_task``, which moves ``updated_at`` (a registration's progress, written
    beside it, is not in the list), so a kept row is used only while the task is unchanged. At
    most ``limit`` are kept (the least recently shown go first)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._rows: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, conn: sa.Connection) -> list[dict[str, Any]]:
        """Every task's list row, oldest first."""
        t = fl_store.tasks
        stamps = conn.execute(sa.select(t.c.task_id, t.c.updated_at).order_by(t.c.created_at))
        order = [(str(tid), float(at)) for tid, at in stamps]
        with self._lock:
            fresh = {tid: self._rows[tid][1] for tid, at in order
                     if tid in self._rows and self._rows[tid][0] == at}  # fmt: skip
        for tid, at in order:
            if tid not in fresh:  # new or changed since it was kept: decode it again
                fresh[tid] = row = fl_wire.summary(conn, tid)
                with self._lock:  # a row newer than ``at`` is only read again next time
                    self._rows[tid] = (at, row)
        with self._lock:
            for tid, _ in order:
                if tid in self._rows:
                    self._rows.move_to_end(tid)
            while len(self._rows) > self.limit:
                self._rows.popitem(last=False)
        return [fresh[tid] for tid, _ in order]


class FederatedPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.summaries = Summaries()
        fl_store.create_tables(plane.db)  # as the federated routes do: a fresh home has none

    async def list(self, request: Request, session: Session) -> View:
        found = await run_in_threadpool(
            self.plane.read, "listing federated tasks", self.summaries.read
        )
        rows = [
            (
                link(url("federated", t["task_id"]), t["task_id"]),
                t["model"],
                t["strategy"],
                badge(t["state"]),
                f"{t['rounds_done']} of {t['rounds']}",
                t["phase"],
                figure(t["accuracy"]),
                figure(t["epsilon"]),
                when(t["created_at"]),
            )
            for t in reversed(found)  # newest first
        ]
        heads = (
            "Task",
            "Model",
            "Strategy",
            "State",
            "Rounds done",
            "Phase",
            "Last accuracy",
            "Epsilon",
            "Created",
        )
        body = table("Federated tasks, newest first", heads, rows, "no federated task yet")
        return View("Federated tasks", "federated", body)

    async def detail(self, request: Request, session: Session) -> View:
        tid = request.path_params["tid"]
        doc = await run_in_threadpool(
            self.plane.read, f"reading federated task {tid[:40]}", lambda c: fl_wire.to_dict(c, tid)
        )
        return View(f"Federated task {doc['task_id']}", "federated", content(doc))

    async def rounds(self, request: Request, session: Session) -> Response:
        """The chart's columns: ``{"t": [round], "accuracy": [...], "loss": [...], "chart"}``
        (app.js draws them with uPlot, as the node page's metrics)."""
        tid = request.path_params["tid"]
        doc = await run_in_threadpool(
            self.plane.read, f"reading federated task {tid[:40]}", lambda c: fl_wire.to_dict(c, tid)
        )
        scored = [h for h in doc["history"] if h.get("accuracy") is not None]
        cols = {
            "t": [h["round"] for h in scored],
            "accuracy": [h["accuracy"] for h in scored],
            "loss": [h.get("loss") for h in scored],
            "chart": CHART,
        }
        return Response(
            orjson.dumps(cols), media_type="application/json", headers={"Cache-Control": "no-store"}
        )


def content(doc: Mapping[str, Any]) -> Html:
    """One task's page from its status document."""
    spec = doc["spec"]
    dp = spec.get("dp")
    facts = pairs(
        [
            ("Task", doc["task_id"]),
            ("Model", spec["model"]),
            ("Registered as", spec.get("register_as") or f"fl-{spec['model']}"),
            ("Strategy", spec["strategy"]),
            ("State", badge(doc["state"])),
            ("Round", f"{doc['round']} ({doc['phase']}); {doc['rounds_done']} of {spec['rounds']} "
                      "done"),
            ("Clients per round", f"{spec['clients_per_round']} (at least {spec['min_clients']})"),
            ("Epsilon so far", _epsilon(doc["epsilon"], dp)),
            ("Secure aggregation", "yes" if spec.get("secagg") else "no"),
            ("Reason", doc.get("reason") or "none"),
            ("Created", when(doc["created_at"])),
            ("Updated", when(doc["updated_at"])),
        ]
    )  # fmt: skip
    initial = doc.get("initial_evaluation") or {}
    start = (
        f"The initial model scored accuracy {figure(initial.get('accuracy'))}, loss "
        f"{figure(initial.get('loss'))} on {figure(initial.get('eval_samples'))} samples."
        if initial
        else "The initial model has not been scored yet."
    )
    rounds = join(
        [
            note(start),
            chart(doc["task_id"]),
            table("Each round", ROUND_HEADS, round_rows(doc), "no round yet"),
        ]
    )
    return join(
        [
            section("Task", facts, "task"),
            section("Rounds: accuracy and loss, participants and dropouts", rounds, "rounds"),
            section("Registration", code(doc.get("registration")), "registration"),
            section("Spec", code(spec), "spec"),
        ]
    )


def chart(task_id: str) -> Html:
    """A uPlot chart of accuracy and loss per round, drawn by app.js (no inline script: CSP)."""
    return Html(
        f'<div class="chart" data-series="{url("federated", task_id, "rounds.json")}" '
        'role="img" aria-label="accuracy and loss of the global model after each round">'
        '<p class="note">Loading the rounds...</p></div>'
    )


def _epsilon(epsilon: float | None, dp: Mapping[str, Any] | None) -> str:
    if dp is None:
        return "n/a (no differential privacy)"
    target = dp.get("target_epsilon")
    spent = figure(epsilon) if epsilon is not None else "n/a (no round closed yet)"
    return f"{spent} at delta {figure(dp.get('delta'))}" + (
        f", target {figure(target)}" if target is not None else ""
    )


def round_rows(doc: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for h in doc["history"]:
        rejected = h.get("rejected") or {}
        rows.append(
            (
                h["round"],
                len(h.get("selected") or []),
                ", ".join(h.get("participants") or []) or "none",
                ", ".join(h.get("dropouts") or []) or "none",
                "; ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) or "none",
                figure(h.get("accuracy")),
                figure(h.get("loss")),
                figure(h.get("eval_samples")),
                figure(h.get("epsilon")),
                when(h.get("closed_at")) if h.get("closed_at") is not None else "open",
            )
        )
    return rows
