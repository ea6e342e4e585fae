"""The federated tasks and retraining jobs bench/ui_bench.py puts in the control plane's database.

Written through the project's own store functions, in the shapes the running code stores:

* **federated tasks**: ``fl_rounds.create`` with a checked :class:`TaskSpec`, then the history
  the round state machine keeps (the record ``fl_rounds._select`` opens and ``_close`` /
  ``_close_secagg`` fill in, a round's accuracy arriving with the next round's answers), saved
  with ``fl_rounds.save_task`` and ended with ``fl_rounds.end_task``. The selections are real
  ones (the task's own selector over 120 candidate nodes), the epsilons the accountant's
  (``PrivacyAccountant.for_fleet``); accuracy, loss, dropouts, rejections, CPU seconds and byte
  counts are made up here (inputs to fill the pages, not readings). Each round's global model
  (``control_fl_models``) is not stored: no page reads it.
* **retraining jobs**: :class:`JobStore` ``create`` / ``start`` / ``progress`` / ``log`` /
  ``finish``, as ``retrain_job.run_job`` and its reporter move a job, with made-up steps,
  decisions and log lines. A running job names this bench's own process as its runner, so the
  control plane's start-up recovery (``retrain_job.recover``) keeps it running.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import sqlalchemy as sa

from edgeloop.control import fl_rounds, fl_store, fl_wire
from edgeloop.control.fl_store import DpOptions, TaskSpec, TaskState
from edgeloop.core.errors import ConfigError
from edgeloop.core.settings import Settings
from edgeloop.federated.accountant import PrivacyAccountant
from edgeloop.federated.models import fl_model
from edgeloop.federated.round import RoundState
from edgeloop.federated.selection import Candidate
from edgeloop.pipeline.retrain_executor import this_process
from edgeloop.pipeline.retrain_spec import RetrainSpec
from edgeloop.registry.database import Database
from edgeloop.registry.job_store import JobStore
from edgeloop.registry.jobs import JobState

TASKS, ROUNDS, CANDIDATES, PER_ROUND, MIN_CLIENTS = 20, 50, 120, 12, 8
STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedprox", "median", "trimmed-mean")
JOBS, MODELS = 200, 30
SHOWN, LOG_LINES = 42, 400  # the job the bench opens (it succeeds) and its log's length


def seed_federated(db: Database, node_ids: list[str], now: float) -> dict[str, str]:
    """20 tasks of 50 closed rounds each (16 done, 2 failed in round 50, 2 running round 51
    of 100); returns ``{"task": a done task with DP}``."""
    if len(node_ids) < PER_ROUND:
        raise ConfigError(f"the federated tasks need at least {PER_ROUND} nodes, got "
                          f"{len(node_ids)}", hint="pass --nodes 500 or more")  # fmt: skip
    step = max(1, len(node_ids) // CANDIDATES)
    candidates = [Candidate(n, num_samples=180 + k % 7 * 10)
                  for k, n in enumerate(node_ids[::step][:CANDIDATES])]  # fmt: skip
    fl_store.create_tables(db)
    eps = _epsilons(len(candidates))
    shown = ""
    with db.write() as conn:
        for j in range(TASKS):
            state = TaskState.FAILED if j in (5, 11) else TaskState.RUNNING if j >= 18 else None
            spec = _spec(j, running=state is TaskState.RUNNING)
            started = now - 86_400 * (TASKS - j) / TASKS
            tid = _task(conn, spec, j, state, candidates, eps, started)
            if spec.dp is not None and state is None and not shown:
                shown = tid
    return {"task": shown}


def _spec(j: int, running: bool) -> TaskSpec:
    dp = DpOptions(noise_multiplier=1.1, clip_norm=1.0, delta=1e-5) if j % 4 == 1 else None
    secagg = dp is None and j % 7 == 3
    strategy = "fedavg" if dp or secagg else STRATEGIES[j % len(STRATEGIES)]
    return TaskSpec(model="digits-cnn" if j % 3 == 0 else "digits-mlp", strategy=strategy,
                    rounds=2 * ROUNDS if running else ROUNDS, clients_per_round=PER_ROUND,
                    min_clients=MIN_CLIENTS, deadline_s=60.0, seed=j, dp=dp, secagg=secagg,
                    register_as=f"fl-site-{j:02d}")  # fmt: skip


def _epsilons(population: int) -> list[float]:
    """epsilon after r rounds, r = 0..ROUNDS+1, as ``_select`` records it for every round."""
    acc = PrivacyAccountant.for_fleet(1.1, min(PER_ROUND, population), population, 1e-5)
    return [acc.epsilon(r) for r in range(ROUNDS + 2)]


def _task(conn: sa.Connection, spec: TaskSpec, j: int, state: TaskState | None,
          candidates: list[Candidate], eps: list[float], t0: float) -> str:  # fmt: skip
    rng = np.random.default_rng(j)
    params = fl_model(spec.model).num_params
    tid = fl_rounds.create(conn, spec, rng.normal(0, 0.1, params), t0)
    selector = spec.make_selector()
    history: list[dict[str, Any]] = []
    t = t0
    for r in range(1, ROUNDS + 2):
        if r == ROUNDS + 1 and state is not TaskState.RUNNING:
            break  # a done task's next step is the final evaluation, not a round
        sel = selector.select(candidates, PER_ROUND, r)
        history.append(_opened(r, sel, len(candidates), eps[r] if spec.dp else None, t))
        if r == ROUNDS + 1:
            break  # round 51 of a running task: selected, training, nobody answered yet
        if r >= 2:  # the previous round's model, as these clients scored it, arrives at the close
            history[-2].update(_scored(r - 1, rng))
        failing = state is TaskState.FAILED and r == ROUNDS
        history[-1].update(_closed(history[-1], spec, rng, params, t + rng.uniform(20, 50),
                                   failing))  # fmt: skip
        t += 65
    result = json.dumps({"reason": None, "registration": None, "initial": _scored(0, rng)})
    if state is TaskState.RUNNING:
        fl_rounds.save_task(conn, tid, t, round=ROUNDS + 1, phase=RoundState.TRAINING.value,
                            phase_started_at=t, selected=json.dumps(history[-1]["selected"]),
                            history=json.dumps(history), result=result)  # fmt: skip
        return tid
    if state is TaskState.FAILED:
        last = history[-1]
        reason = (f"round {ROUNDS} failed: {len(last['participants'])} accepted updates, the "
                  f"round needs {MIN_CLIENTS} ({len(last['rejected'])} rejected, "
                  f"{len(last['dropouts'])} dropouts)")  # fmt: skip
        fl_rounds.save_task(conn, tid, t, round=ROUNDS, history=json.dumps(history), result=result)
        fl_rounds.end_task(conn, fl_rounds.task_row(conn, tid), state, t, reason)
        return tid
    # Done: the clients that answered round 50 scored the final model (the EVALUATING step).
    missing = history[-1]["participants"][:1]  # one evaluator did not answer in time
    history[-1].update(_scored(ROUNDS, rng), final_evaluation_missing=missing)
    fl_rounds.save_task(conn, tid, t, round=ROUNDS + 1, history=json.dumps(history), result=result)
    fl_rounds.end_task(conn, fl_rounds.task_row(conn, tid), TaskState.DONE, t, None)
    lineage = {"federated_task": tid, "rounds": ROUNDS}  # as fl_export.publish answers
    fl_wire.set_registration(
        conn, tid, {"state": "registered", "ref": f"{spec.name}:1", "lineage": lineage}
    )
    return tid


def _opened(r: int, sel: Any, eligible: int, epsilon: float | None, t: float) -> dict[str, Any]:
    """The record ``fl_rounds._select`` appends when round ``r`` starts."""
    return {
        "round": r, "selected": list(sel.chosen), "eligible": eligible,
        "why": {d.node_id: d.why.value for d in sel.decisions},
        "why_detail": {d.node_id: d.detail for d in sel.decisions},
        "started_at": t, "closed_at": None, "participants": [], "dropouts": [],
        "declined": {}, "rejected": {}, "client_cpu_s": {}, "client_samples": {},
        "epsilon": epsilon, "accuracy": None, "loss": None,
        "eval_samples": 0, "client_loss": None, "update_norm": None, "divergence": None,
        "num_samples": 0, "bytes_up": 0, "bytes_down": 0,
    }  # fmt: skip


def _scored(r: int, rng: np.random.Generator) -> dict[str, Any]:
    """What ``fl_rounds._evaluation`` gives for the model after round ``r`` (made-up figures:
    accuracy rising towards 0.95, loss falling)."""
    return {"accuracy": round(0.95 - 0.8 * math.exp(-r / 9) + rng.normal(0, 0.004), 4),
            "loss": round(0.12 + 2.2 * math.exp(-r / 11) + rng.normal(0, 0.01), 4),
            "eval_samples": int(rng.integers(300, 420))}  # fmt: skip


def _closed(record: dict[str, Any], spec: TaskSpec, rng: np.random.Generator, params: int,
            t: float, failing: bool) -> dict[str, Any]:  # fmt: skip
    """What ``fl_rounds._close`` (or ``_close_secagg``) adds when the round closes."""
    selected: list[str] = record["selected"]
    out = rng.permutation(len(selected))
    declined = {} if spec.secagg or rng.random() > 0.3 else {
        selected[out[0]]: "on battery at 14%, below the policy's 20%"}  # fmt: skip
    asked = [n for n in selected if n not in declined]
    gone = {asked[k] for k in rng.permutation(len(asked))[: 6 if failing else rng.integers(0, 3)]}
    bad = [] if spec.secagg or rng.random() > 0.1 else [n for n in asked if n not in gone][:1]
    accepted = [n for n in asked if n not in gone and n not in bad]
    samples = {n: int(rng.integers(150, 240)) for n in accepted}
    closed = {
        "closed_at": t, "dropouts": [n for n in asked if n not in accepted],
        "participants": accepted, "bytes_up": len(accepted) * (params * 4 + 310),
        "bytes_down": len(selected) * params * 4,
    }  # fmt: skip
    if spec.secagg:
        closed.update(dropped_after_masking=[], secagg_threshold=MIN_CLIENTS,
                      client_loss=round(float(rng.uniform(0.1, 0.6)), 4))  # fmt: skip
    else:
        closed.update(
            declined=declined, client_samples=samples,
            client_cpu_s={n: round(float(rng.uniform(0.4, 2.5)), 3) for n in accepted},
            rejected={n: f"not_finite: the update of {n} holds NaN at 3 of {params} weights"
                      for n in bad},
        )  # fmt: skip
    if failing:
        return closed
    closed.update(
        update_norm=round(float(rng.uniform(0.05, 0.8)), 4), num_samples=sum(samples.values()),
        divergence=None if spec.secagg else round(float(rng.uniform(0.01, 0.2)), 4),
    )  # fmt: skip
    if not spec.secagg:
        closed["client_loss"] = round(float(rng.uniform(0.1, 0.6)), 4)
    return closed


def seed_jobs(settings: Settings) -> dict[str, str]:
    """200 retraining jobs over 30 models: the newest of each model queued or running, the
    rest ended (succeeded, failed, cancelled); returns ``{"job": a succeeded job with a log of
    400 lines}``."""
    store = JobStore(settings.db_url)
    runner = this_process()  # alive while the bench runs: recovery leaves the jobs running
    shown = ""
    try:
        for i in range(JOBS):
            model = f"kws-site{i % MODELS:02d}"
            spec = RetrainSpec.from_dict(
                {"model": f"{model}:{1 + i // MODELS}", "data": [f"caps-{i % 20:02d}:2"],
                 "trigger": "drift-alert" if i % 3 else "manual", "seed": i,
                 "work_dir": f"/var/lib/edgeloop/jobs/{i:04d}"})  # fmt: skip
            job = store.create("retrain", model, spec.to_dict())
            lines = LOG_LINES if i == SHOWN else 12 + i % 9
            if i >= JOBS - MODELS and i % 2:
                continue  # queued: its process has not started yet
            store.start(job.id, runner)
            _run(store, job.id, i, lines)
            if i == SHOWN:
                shown = job.id
    finally:
        store.close()
    return {"job": shown}


def _run(store: JobStore, job_id: str, i: int, lines: int) -> None:
    """Steps, progress and log lines of a job; ends it unless it is one of the newest."""
    ending = (JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED,
              JobState.SUCCEEDED, JobState.CANCELLED, JobState.SUCCEEDED)[i % 7]  # fmt: skip
    active = i >= JOBS - MODELS
    store.log(job_id, f"champion kws-site{i % MODELS:02d}:{1 + i // MODELS}; edge variant: "
                      f"kws-site{i % MODELS:02d}-int8")  # fmt: skip
    store.progress(job_id, "assemble", 0.0)
    store.log(job_id, "mix: 4,812 original + 1,233 recent samples, 370 held out")
    if ending is JobState.FAILED and not active:
        reason = "DataError: the recent data sets leave no sample to hold out"
        store.log(job_id, reason)
        store.finish(job_id, ending, reason, {"error": {"type": "DataError", "message": reason}})
        return
    store.progress(job_id, "train", 0.05)
    epochs = max(1, lines - 4)
    for e in range(1, epochs + 1):
        loss = 0.2 + 1.8 * math.exp(-e / (epochs / 4))
        store.log(job_id, f"epoch {e}/{epochs} loss {loss:.4f} accuracy {0.97 - loss / 4:.4f}")
        if active and e == epochs // 2:
            store.progress(job_id, "train", 0.05 + 0.55 * e / epochs)
            return
    store.progress(job_id, "evaluate", 0.6)
    if ending is JobState.CANCELLED:
        store.log(job_id, "cancelled on request during step evaluate; nothing was registered")
        store.finish(job_id, ending, "cancelled on request; nothing was registered")
        return
    verdict = ("recent hold-out 0.8811 -> 0.9243 (+4.32 pp, 370 samples); original test 0.9512 "
               "-> 0.9498 (-0.14 pp, 1000 samples)")  # fmt: skip
    store.log(job_id, verdict)
    store.progress(job_id, "optimize", 0.7)
    store.progress(job_id, "register", 0.9)
    store.log(job_id, f"registered kws-site{i % MODELS:02d}:{2 + i // MODELS}")
    result = {"decision": {"promote": True, "reason": verdict}, "trigger": "drift-alert",
              "seconds": {"assemble": 0.41, "train": 38.2, "evaluate": 1.9, "optimize": 12.7,
                          "register": 0.8}}  # fmt: skip
    store.finish(job_id, ending, verdict, result)
