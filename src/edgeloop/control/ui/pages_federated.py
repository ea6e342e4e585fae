"""The federated-task pages: every task, and one with its rounds, participants and epsilon.

They read the status documents ``GET /api/v1/fl/tasks[/{id}]`` answer
(:func:`edgeloop.control.fl_wire.summary` and :func:`~edgeloop.control.fl_wire.to_dict`) in a
read transaction: moving a task's rounds on is the federated routes' own loop, not a page's.
A round's accuracy and loss are what the clients measured on that round's resulting model
(they score it at the start of the next round, or in the final evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import fl_rounds, fl_store, fl_wire
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


class FederatedPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        fl_store.create_tables(plane.db)  # as the federated routes do: a fresh home has none

    async def list(self, request: Request, session: Session) -> View:
        def run(conn: sa.Connection) -> list[dict[str, Any]]:
            return [fl_wire.summary(conn, i) for i in fl_rounds.ids(conn)]

        found = await run_in_threadpool(self.plane.read, "listing federated tasks", run)
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
