"""Fleet A/B experiments over the control plane: start, look, promote, revert.

Every step that changes what a node serves is a rollout through the normal guarded path
(``ControlPlane.deploy``: signed documents, waves, the health guard, rollback on a breach):

- start: the champion, with ``serving.experiment`` naming the challenger and the split
  (agent/experiment.py serves both arms and reports per-arm counts);
- promote: the challenger alone; revert: the champion alone.

Everything a user can get wrong is checked before anything is stored, signed or started, and a
start whose rollout cannot be created leaves no experiment behind.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from edgeloop.control import experiment_store as store
from edgeloop.control import fleet, tables
from edgeloop.control import rollout as machine
from edgeloop.control.deployments import DeploymentSpec, Plan, spec_changes
from edgeloop.control.experiment_arms import SUPPORTED
from edgeloop.control.experiment_look import config_from, look
from edgeloop.control.experiment_store import Experiment, ExpState
from edgeloop.control.plane import ControlPlane
from edgeloop.core.errors import ConfigError, ConflictError, EdgeError, NotFoundError
from edgeloop.core.types import ModelRef, TensorSpec
from edgeloop.experiments import Decision, Metric, Mixing

OFFLINE_S = 120.0  # a node not heard from for this long is offline: no experiment starts on it
# A new experiment's mixing unless the start names one (API, CLI and SDK). Two-point: at the
# minimum effect it stops on 2,779 samples per arm on average where the fixed-horizon test
# needs 3,213 and the normal mixing 3,301 (90 % vs 92 %, 80 % power; A/A false positives
# 3.4-4.4 % <= 5 %; docs/experiments.md "Goals, measured"). Its cost: effects under half the
# minimum effect end inconclusive at the horizon. A stored experiment without a mixing is
# normal (control/experiment_look.py), so existing experiments keep their meaning.
DEFAULT_MIXING = Mixing.TWO_POINT
# Shown with every status, listing row and decision of an experiment decided on confidence
# (docs/experiments.md, "Confidence as a metric").
PROXY_CAVEAT = (
    "proxy metric: confidence is not correctness; a better-calibrated model can score lower"
)
E = ExpState


@dataclass(frozen=True, slots=True)
class StartRequest:
    """``POST /api/v1/experiments`` after its schema check (control/experiments_api.py)."""

    name: str
    model: str
    champion: int
    challenger: int
    split: float | None  # the challenger's share (a fraction); None with ``shadow``
    metric: str = "accuracy"
    nodes: Sequence[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    alpha: float = 0.05
    min_effect: float = 0.02
    horizon_per_arm: int = 100_000
    latency_threshold_ms: float = 100.0
    plan: Mapping[str, Any] = field(default_factory=dict)
    guardrails: Mapping[str, float] = field(default_factory=dict)  # metric -> margin
    mixing: str = DEFAULT_MIXING.value
    shadow: bool = False  # the challenger gets a copy of every request and answers nobody


def _check(req: StartRequest) -> Metric:
    if req.shadow:
        if req.split is not None:
            raise ConfigError(
                f"a shadow experiment takes no split (got {req.split}): the challenger gets a "
                "copy of every request",
                hint="leave split out, or drop shadow for an A/B split",
            )
    elif req.split is None:
        raise ConfigError("split is missing", hint="the challenger's share as a fraction, "
                          "e.g. 0.5; or shadow: true for a copy of every request")  # fmt: skip
    elif not (math.isfinite(req.split) and 0.0 < req.split < 1.0):
        raise ConfigError(
            f"split {req.split} is outside 0..1 (both ends excluded): over the API split is the "
            "challenger's share of the traffic as a fraction",
            hint="e.g. 0.5 for half or 0.1 for a tenth (the CLI's --split and the SDK's split "
            "take percent: 50, 10)",
        )
    if req.champion == req.challenger:
        raise ConfigError(f"champion and challenger are both version {req.champion}",
                          hint="compare two different versions of the model")  # fmt: skip
    try:
        metric = Metric(req.metric)
    except ValueError:
        metric = None
    if metric not in SUPPORTED:
        raise ConfigError(
            f"metric {req.metric!r} is not measured per arm on the nodes",
            hint=f"use one of {[m.value for m in SUPPORTED]}",
        )
    if not (math.isfinite(req.latency_threshold_ms) and req.latency_threshold_ms > 0):
        raise ConfigError(f"latency_threshold_ms {req.latency_threshold_ms} is not > 0")
    for name in req.guardrails:
        if name not in {m.value for m in SUPPORTED}:
            raise ConfigError(f"guardrail metric {name!r} is not measured per arm on the nodes",
                              hint=f"use one of {[m.value for m in SUPPORTED]}")  # fmt: skip
    if req.shadow and "accuracy" in {req.metric, *req.guardrails}:
        raise ConfigError(
            "accuracy is not measured on a shadow: its answers reach nobody, so no label is "
            "joined to them",
            hint="decide a shadow experiment on error_rate, latency_p99 or confidence",
        )
    if req.mixing not in {m.value for m in Mixing}:
        raise ConfigError(f"mixing {req.mixing!r} is not known",
                          hint=f"use one of {[m.value for m in Mixing]}")  # fmt: skip
    return metric


def _has_class_scores(model: str, outputs: Sequence[TensorSpec]) -> None:
    """Raise ConfigError when the first output holds one value a row (a score, a regression):
    such a model has no top-1 confidence, so its nodes would count none and the experiment
    would wait forever. A free axis may hold classes: allowed."""
    if not outputs:
        return
    per_row = outputs[0].shape[1:]
    if None not in per_row and math.prod(d for d in per_row if d is not None) < 2:
        raise ConfigError(
            f"{model}'s output {outputs[0].name!r} holds one value a row "
            f"(shape {list(outputs[0].shape)}): it has no class scores, so no confidence",
            hint="decide on accuracy, error_rate or latency_p99 (confidence needs a classifier)",
        )


def _version(plane: ControlPlane, model: str, version: int, role: str) -> Any:
    try:
        return plane.registry.show(ModelRef(model, version))
    except NotFoundError:
        known = [v.version for v in plane.registry.list(model)]
        raise NotFoundError(
            f"the {role} {model}:{version} is not in the registry; versions of {model!r}: "
            f"{known or 'none (unknown model)'}",
            hint="publish it first: edgeloop fleet publish FILE, or GET /api/v1/models",
        ) from None


def _nodes(conn: sa.Connection, req: StartRequest) -> list[str]:
    rows = fleet.rows(conn)
    if req.nodes:
        by_key = {r.node_id: r for r in rows} | {r.name: r for r in rows}
        unknown = [n for n in req.nodes if n not in by_key]
        if unknown:
            raise NotFoundError(
                f"node(s) {unknown} are not enrolled; known: {sorted(r.name for r in rows)}",
                hint="edgeloop fleet nodes lists them (a name or an id)",
            )
        chosen = list({by_key[n].node_id: by_key[n] for n in req.nodes}.values())
    else:
        chosen = [r for r in rows if fleet.matches(r, {"labels": req.labels})]
    if not chosen:
        raise ConfigError(f"the experiment selects no node (labels {dict(req.labels)})",
                          hint="edgeloop fleet nodes shows the nodes and their labels")  # fmt: skip
    now = time.time()
    offline = [r.name for r in chosen if r.last_seen is None or now - r.last_seen > OFFLINE_S]
    if offline:
        raise ConflictError(
            f"node(s) {offline} have not reported for over {OFFLINE_S:g} s (offline)",
            hint="start the experiment on nodes that are online, or bring them back first",
        )
    return [r.node_id for r in chosen]


def start(plane: ControlPlane, req: StartRequest) -> dict[str, Any]:
    """Create and roll out an experiment; its status.

    Raises:
        ConfigError (400): a bad split, metric, statistic parameter or plan; no node selected.
        NotFoundError (404): an unknown model, version or node.
        ConflictError (409): the versions' inputs/outputs differ, an offline node, the model is
            in another experiment, or a node is in a rollout still in progress.
    """
    metric = _check(req)
    plan = Plan.from_dict(dict(req.plan))
    champion = _version(plane, req.model, req.champion, "champion")
    challenger = _version(plane, req.model, req.challenger, "challenger")
    changes = spec_changes(champion.manifest.to_dict(), challenger.manifest.to_dict())
    if changes:
        raise ConflictError(
            f"{req.model}:{req.challenger} takes other inputs/outputs than {req.model}:"
            f"{req.champion}: {'; '.join(changes[:4])}",
            hint="an A/B split sends the same requests to both arms; compare compatible versions",
        )
    if Metric.CONFIDENCE.value in {req.metric, *req.guardrails}:
        _has_class_scores(req.model, champion.manifest.outputs)
    config = {"metric": metric.value, "alpha": req.alpha, "min_effect": req.min_effect,
              "horizon_per_arm": req.horizon_per_arm,
              "latency_threshold_ms": req.latency_threshold_ms, "plan": plan.to_dict(),
              "mixing": req.mixing, "mode": "shadow" if req.shadow else "split",
              "guardrails": [
                  {"metric": m, "margin": float(v)} for m, v in sorted(req.guardrails.items())
              ]}  # fmt: skip
    split = 1.0 if req.shadow or req.split is None else req.split  # a shadow sees everything
    config_from(config, split)  # alpha, min_effect, horizon, guardrails: ConfigError
    node_ids = plane.read("selecting nodes", lambda c: _nodes(c, req))

    def insert(conn: sa.Connection) -> str:
        return store.insert(conn, req.name, req.model, req.champion, req.challenger,
                            split, config, node_ids)  # fmt: skip

    exp_id = plane.write("creating the experiment", insert)
    try:
        entry = plane.publish_artifact(challenger.ref, challenger.ref)
        block = {"id": exp_id, "model": req.model, "champion": req.champion,
                 "challenger": entry,
                 **({"shadow": True} if req.shadow else {"split": split})}  # fmt: skip
        spec = _spec(f"{exp_id}-start", champion.ref, node_ids, plan, {"experiment": block})
        rollout = plane.deploy(spec)
    except BaseException:
        plane.write("dropping the experiment", lambda c: _drop(c, exp_id))
        raise
    plane.write("recording the start", lambda c: _set_rollout(c, exp_id, rollout["rollout_id"]))
    return status(plane, exp_id)


def _spec(name: str, ref: ModelRef, node_ids: list[str], plan: Plan,
          serving: Mapping[str, Any]) -> DeploymentSpec:  # fmt: skip
    return DeploymentSpec(name=name, model=ref, selector={"labels": {}, "nodes": node_ids},
                          serving=dict(serving), plan=plan)  # fmt: skip


def _drop(conn: sa.Connection, exp_id: str) -> None:
    conn.execute(store.experiments.delete().where(store.experiments.c.experiment_id == exp_id))


def _set_rollout(conn: sa.Connection, exp_id: str, rollout_id: str) -> None:
    conn.execute(
        store.experiments.update()
        .where(store.experiments.c.experiment_id == exp_id)
        .values(rollout_id=rollout_id)
    )


def _rollout_state(conn: sa.Connection, rollout_id: str | None) -> machine.State | None:
    if rollout_id is None:
        return None
    query = sa.select(tables.rollouts.c.state).where(tables.rollouts.c.rollout_id == rollout_id)
    state = conn.execute(query).scalar_one_or_none()
    return None if state is None else machine.State(state)


# (experiment state, rollout outcome) -> the state it leads to
_AFTER = {
    (E.STARTING, machine.State.COMPLETED): E.RUNNING,
    (E.PROMOTING, machine.State.COMPLETED): E.PROMOTED,
    (E.REVERTING, machine.State.COMPLETED): E.REVERTED,
    (E.STARTING, machine.State.ROLLED_BACK): E.FAILED,
    (E.PROMOTING, machine.State.ROLLED_BACK): E.RUNNING,
}


def refresh(conn: sa.Connection, exp_id: str) -> Experiment:
    """Follow the current rollout, then take a look while the experiment runs."""
    exp = store.get(conn, exp_id, lock=True)
    outcome = _rollout_state(conn, exp.rollout_id)
    after = _AFTER.get((exp.state, outcome)) if outcome is not None else None
    if after is not None:
        store.move(conn, exp, after, f"rollout {exp.rollout_id} {outcome}")
        exp = store.get(conn, exp_id)
    if exp.state in (E.STARTING, E.RUNNING):
        reports = _reports(conn, exp.nodes)
        doc, tests = look(exp, reports)
        store.save_look(conn, exp_id, doc, tests)
        before = ((exp.look or {}).get("verdict") or {}).get("decision")
        after_ = (doc.get("verdict") or {}).get("decision")
        if after_ != before and after_ not in (None, Decision.CONTINUE.value):
            store.note(conn, exp_id, f"decision {after_} reached" + _caveat_note(exp))
        exp = store.get(conn, exp_id)
    return exp


def _caveat(exp: Experiment) -> str | None:
    return PROXY_CAVEAT if exp.config.get("metric") == Metric.CONFIDENCE.value else None


def _caveat_note(exp: Experiment) -> str:
    caveat = _caveat(exp)
    return f" ({caveat})" if caveat else ""


def _reports(conn: sa.Connection, node_ids: Sequence[str]) -> list[tuple[str, str, Any]]:
    query = sa.select(
        tables.nodes.c.node_id, tables.nodes.c.device_class, tables.nodes.c.reported
    ).where(tables.nodes.c.node_id.in_(list(node_ids)))
    return [(r.node_id, r.device_class, json.loads(r.reported) if r.reported else None)
            for r in conn.execute(query)]  # fmt: skip


def status(plane: ControlPlane, exp_id: str) -> dict[str, Any]:
    """The experiment now: state, per-arm figures, the decision and its evidence.

    Raises:
        NotFoundError (404): no such experiment.
    """

    def run(conn: sa.Connection) -> dict[str, Any]:
        return to_dict(conn, refresh(conn, exp_id))

    return dict(plane.write(f"looking at experiment {exp_id[:64]}", run))


def listing(plane: ControlPlane) -> list[dict[str, Any]]:
    def run(conn: sa.Connection) -> list[dict[str, Any]]:
        return [to_dict(conn, e, short=True) for e in store.listing(conn)]

    return list(plane.read("listing experiments", run))


def to_dict(conn: sa.Connection, exp: Experiment, short: bool = False) -> dict[str, Any]:
    look_doc = exp.look or {}
    verdict = look_doc.get("verdict") or {}
    doc: dict[str, Any] = {
        "experiment_id": exp.experiment_id,
        "name": exp.name,
        "model": exp.model,
        "champion": exp.champion,
        "challenger": exp.challenger,
        "split": exp.split,
        "mode": exp.config.get("mode", "split"),
        "metric": exp.config["metric"],
        "state": exp.state.value,
        "decision": verdict.get("decision"),
        "caveat": _caveat(exp),  # None but for a proxy metric (confidence)
        "rollout_id": exp.rollout_id,
        "rollout_state": _rollout_state(conn, exp.rollout_id),
        "nodes": list(exp.nodes),
        "created_at": fleet.iso(exp.created_at),
    }
    if short:
        return doc
    return {
        **doc,
        "arms": look_doc.get("arms"),
        "evidence": verdict or None,
        "waiting_for": look_doc.get("reason"),
        "by_class": look_doc.get("by_class"),
        "node_status": look_doc.get("nodes"),
        "config": dict(exp.config),
        "history": [{**h, "at": fleet.iso(h["at"])} for h in exp.history],
        "updated_at": fleet.iso(exp.updated_at),
    }


def promote(plane: ControlPlane, exp_id: str, force: bool = False) -> dict[str, Any]:
    """Roll the challenger out to the experiment's nodes (the guarded path).

    Raises:
        NotFoundError: no such experiment.
        ConflictError: not RUNNING, or the decision is not ``promote_treatment`` (``force``
            skips that check), or a node is in another rollout.
    """
    exp = plane.write(f"looking at experiment {exp_id[:64]}", lambda c: refresh(c, exp_id))
    decision = ((exp.look or {}).get("verdict") or {}).get("decision")
    if exp.state is not E.RUNNING:
        raise ConflictError(f"experiment {exp_id} is {exp.state}; only a RUNNING one is promoted",
                            hint="edgeloop fleet experiment status " + exp_id)  # fmt: skip
    if decision != Decision.PROMOTE_TREATMENT.value and not force:
        raise ConflictError(
            f"experiment {exp_id}'s decision is {decision or 'not reached'}, not "
            f"{Decision.PROMOTE_TREATMENT.value}",
            hint="wait for the evidence (status), or promote anyway with --force",
        )
    ref = ModelRef(exp.model, exp.challenger)
    detail = f"promote {ref} ({decision}{'; ' + c if (c := _caveat(exp)) else ''})"
    return _step(plane, exp, E.PROMOTING, f"{exp_id}-promote", ref, detail)


def revert(plane: ControlPlane, exp_id: str, reason: str | None = None) -> dict[str, Any]:
    """Roll the champion alone (no experiment) out to the experiment's nodes; ``reason`` goes
    into the history (the control loop's guardrail stop names the guardrail).

    Raises:
        NotFoundError: no such experiment.
        ConflictError: it is over (PROMOTED, REVERTED) or a step's rollout is in progress.
    """
    exp = plane.write(f"looking at experiment {exp_id[:64]}", lambda c: refresh(c, exp_id))
    busy = plane.read("reading the rollout", lambda c: _rollout_state(c, exp.rollout_id))
    if busy in machine.ACTIVE:
        raise ConflictError(
            f"experiment {exp_id}'s rollout {exp.rollout_id} is still {busy}",
            hint=f"wait for it, or roll it back: edgeloop fleet rollback {exp.rollout_id}",
        )
    ref = ModelRef(exp.model, exp.champion)
    detail = f"{reason}: revert to {ref}" if reason else f"revert to {ref}"
    return _step(plane, exp, E.REVERTING, f"{exp_id}-revert", ref, detail)


def _step(plane: ControlPlane, exp: Experiment, new: ExpState, name: str, ref: ModelRef,
          detail: str) -> dict[str, Any]:  # fmt: skip
    store.check_move(exp, new)  # before anything is rolled out
    plan = Plan.from_dict(exp.config.get("plan") or {})
    rollout = plane.deploy(_spec(name, ref, list(exp.nodes), plan, {}))

    def record(conn: sa.Connection) -> None:
        now = store.get(conn, exp.experiment_id, lock=True)
        store.move(conn, now, new, f"{detail}: rollout {rollout['rollout_id']}",
                   rollout_id=rollout["rollout_id"])  # fmt: skip

    try:
        plane.write("recording the step", record)
    except EdgeError:
        plane.rollback(rollout["rollout_id"], None)  # raced with another step: undo ours
        raise
    return status(plane, exp.experiment_id)
