"""The experiments pages: every A/B experiment, and one with its arms, decision and history.

They read through the functions ``GET /api/v1/experiments[/{eid}]`` call
(:func:`edgeloop.control.experiments.listing` and :func:`~edgeloop.control.experiments.status`,
which takes a fresh look as the API does). The status gives per-arm counts and rates, and the
sequential test's evidence: the effect's anytime-valid confidence sequence (``cs_low`` ..
``cs_high``) and p-value; it gives no interval per arm, so none is shown. An experiment decided
on confidence carries the status's ``caveat`` (a proxy metric) at the top of its page, beside
its decision, and "(proxy)" after the metric in the list, as the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from edgeloop.control import experiment_store, experiments
from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui.html import Html, join, url
from edgeloop.control.ui.layout import View
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import badge, code, figure, link, note, pairs, section, table

EVIDENCE_HEADS = (
    "Metric",
    "Champion n",
    "Challenger n",
    "Champion mean",
    "Challenger mean",
    "Effect",
    "Confidence sequence",
    "p-value",
)


class ExperimentPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        experiment_store.create_table(plane.db)  # as the experiment routes do

    async def list(self, request: Request, session: Session) -> View:
        found = await run_in_threadpool(experiments.listing, self.plane)
        rows = [
            (
                link(url("experiments", e["experiment_id"]), e["experiment_id"]),
                e["name"],
                f"{e['model']}: v{e['champion']} vs v{e['challenger']}",
                e["mode"],
                _metric(e),
                badge(e["state"]),
                badge(e["decision"] or "no decision yet"),
                e["created_at"],
            )
            for e in reversed(found)  # newest first
        ]
        heads = ("Experiment", "Name", "Model", "Mode", "Metric", "State", "Decision", "Created")
        body = table("Experiments, newest first", heads, rows, "no experiment started yet")
        return View("Experiments", "experiments", body)

    async def detail(self, request: Request, session: Session) -> View:
        eid = request.path_params["eid"]
        doc = await run_in_threadpool(experiments.status, self.plane, eid)
        return View(f"Experiment {doc['name']}", "experiments", content(doc))


def _metric(doc: Mapping[str, Any]) -> str:
    return str(doc["metric"]) + (" (proxy)" if doc.get("caveat") else "")


def content(doc: Mapping[str, Any]) -> Html:
    """One experiment's page from its status document (``GET /api/v1/experiments/{eid}``)."""
    caveat = doc.get("caveat")
    mixing = (doc.get("config") or {}).get("mixing") or "normal (stored without one)"
    warning = note(f"Caveat: {caveat}") if caveat else ""
    facts = pairs(
        [
            ("Experiment", doc["experiment_id"]),
            ("Name", doc["name"]),
            ("Model", doc["model"]),
            ("Champion", f"v{doc['champion']}"),
            ("Challenger", f"v{doc['challenger']}"),
            ("Mode", doc["mode"]),
            ("Challenger's share", figure(doc["split"])),
            ("Metric", _metric(doc)),
            ("Mixing", mixing),
            ("State", badge(doc["state"])),
            ("Rollout", _rollout(doc)),
            ("Nodes", len(doc["nodes"])),
            ("Created", doc["created_at"]),
            ("Updated", doc["updated_at"]),
        ]
    )
    history = table(
        "State history, oldest first",
        ("At", "State", "Detail"),
        [(h["at"], badge(h.get("state")), h.get("detail", "")) for h in doc["history"]],
        "no history",
    )
    return join(
        [
            section("Experiment", join([warning, facts]), "experiment"),
            section("Arms", arms(doc.get("arms")), "arms"),
            section("Decision and its evidence", decision(doc), "decision"),
            section("State history", history, "history"),
            section("By device class", code(doc.get("by_class") or {}), "by-class"),
        ]
    )


def _rollout(doc: Mapping[str, Any]) -> Html | str:
    rid = doc.get("rollout_id")
    if not rid:
        return "none"
    return join([link(url("rollouts", rid), rid), f" ({doc.get('rollout_state') or 'n/a'})"])


def arms(found: Mapping[str, Any] | None) -> Html:
    rows = []
    for role in ("champion", "challenger"):
        a = (found or {}).get(role)
        if not a:
            continue
        rows.append(
            (
                role,
                f"v{a['version']}",
                figure(a.get("share")),
                figure(a.get("requests")),
                figure(a.get("errors")),
                figure(a.get("error_rate")),
                f"{figure(a.get('accuracy'))} of {figure(a.get('labelled'))} labelled",
                figure(a.get("latency_mean_ms"), " ms"),
                figure(a.get("latency_p99_ms"), " ms"),
                _confidence(a),
            )
        )
    heads = (
        "Arm",
        "Version",
        "Share",
        "Requests",
        "Errors",
        "Error rate",
        "Accuracy",
        "Latency mean",
        "Latency p99",
        "Confidence mean",
    )
    return join(
        [
            table("Each arm's totals over the fleet", heads, rows, "no look taken yet"),
            note(
                "Per-arm rates are point estimates: the status gives a confidence sequence for "
                "the effect (below), not an interval per arm. Confidence is the mean top-1 "
                "probability of the rows answered with class scores: a proxy, not correctness."
            ),
        ]
    )


def _confidence(arm: Mapping[str, Any]) -> str:
    """The arm's mean top-1 confidence over its rows, or n/a where none was reported (a model
    without class scores, or a node from before confidence was reported)."""
    if not arm.get("confidence_rows"):
        return "n/a"
    return f"{figure(arm.get('confidence_mean'))} over {figure(arm['confidence_rows'])} rows"


def decision(doc: Mapping[str, Any]) -> Html:
    verdict = doc.get("evidence") or {}
    waiting = doc.get("waiting_for")
    words = pairs(
        [
            ("Decision", badge(doc.get("decision") or "no decision yet")),
            *([("Caveat", doc["caveat"])] if doc.get("caveat") else []),
            ("Waiting for", waiting or "nothing"),
            ("Guardrail tripped", verdict.get("tripped") or "none"),
            ("Losing device classes", ", ".join(verdict.get("losing_classes") or []) or "none"),
        ]
    )
    primary = verdict.get("primary")
    rows = [evidence_row(e) for e in ([primary] if primary else [])]
    rows += [evidence_row(g) for g in verdict.get("guardrails") or []]
    rows += [evidence_row(e, c) for c, e in sorted((verdict.get("classes") or {}).items())]
    evidence = table(
        "The mixture sequential test's evidence (primary metric, guardrails, device classes)",
        EVIDENCE_HEADS,
        rows,
        "no evidence yet",
    )
    return join([words, evidence])


def evidence_row(e: Mapping[str, Any], device_class: str | None = None) -> tuple[Any, ...]:
    low, high = e.get("cs_low"), e.get("cs_high")
    interval = "n/a" if low is None or high is None else f"[{figure(low)}, {figure(high)}]"
    metric = e.get("metric", "n/a") + (f" ({device_class})" if device_class else "")
    return (
        metric,
        figure(e.get("champion_n")),
        figure(e.get("challenger_n")),
        figure(e.get("champion_mean")),
        figure(e.get("challenger_mean")),
        figure(e.get("effect")),
        interval,
        figure(e.get("p_value")),
    )
