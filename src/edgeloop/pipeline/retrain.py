"""The retraining job's steps: assemble -> train -> evaluate -> optimize -> register.

:func:`run_retrain` is what the job's own process runs (:mod:`edgeloop.pipeline.retrain_job`
starts it and keeps its record). Each step reports through a :class:`Reporter`, which records
progress and log lines and stops the run when a cancel was asked for. Nothing is registered
until every step before ``register`` finished and the challenger won (:mod:`retrain_eval`);
registering is all or nothing (:mod:`retrain_register`).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeloop.core.errors import DataError, EdgeError
from edgeloop.core.files import write_atomic
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest
from edgeloop.pipeline.retrain_data import Assembled, assemble, parent_splits, recent_sets
from edgeloop.pipeline.retrain_eval import Comparison, Decision, compare, decide
from edgeloop.pipeline.retrain_register import EdgeRecipe, edge_recipe
from edgeloop.pipeline.retrain_spec import Init, RetrainSpec
from edgeloop.registry.dataset_library import DatasetLibrary
from edgeloop.registry.registry import Registry
from edgeloop.registry.store import ModelVersion

# Share of the progress bar done when each step starts (training dominates the wall time).
STEPS = {"assemble": 0.0, "train": 0.05, "evaluate": 0.6, "optimize": 0.7, "register": 0.9}


class Reporter(Protocol):
    """Where a run reports to: its job record, or nothing (a library call)."""

    def step(self, name: str, progress: float) -> None:
        """A step starts; raises JobCancelledError when a cancel was asked for."""

    def log(self, line: str) -> None: ...

    def registering(self) -> AbstractContextManager[None]:
        """Held while versions are published: a cancel then waits until it is over."""


@dataclass
class Run:
    """What the steps hand each other, and the report they build up."""

    spec: RetrainSpec
    settings: Settings
    job_id: str
    work: Path
    report: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_retrain(
    spec: RetrainSpec, settings: Settings, job_id: str, reporter: Reporter
) -> dict[str, Any]:
    """Run the job's steps; return its report (``decision``, ``evaluation``, ``mix``, refs).

    Raises:
        EdgeError: from the step that failed (nothing registered); JobCancelledError (from the
            reporter) when cancelled.
    """
    work = Path(spec.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    run = Run(spec, settings, job_id, work)
    with Registry.open(settings) as registry:
        champion = registry.show(spec.model)
        champion_file = registry.resolve(champion.ref)[1]
        edge = edge_recipe(registry, champion.ref)
    run.report.update(champion=str(champion.ref), job_id=job_id, trigger=spec.trigger.value)
    reporter.log(f"champion {champion.ref}; edge variant: {edge.name if edge else 'none'}")

    data = _timed(run, "assemble", reporter, lambda: _assemble(run, champion.manifest))
    reporter.log(_mix_line(data))
    challenger = _timed(run, "train", reporter, lambda: _train(run, champion, data, reporter))
    comparison = _timed(
        run, "evaluate", reporter, lambda: compare(champion_file, challenger.onnx,
                                                   data.holdout, data.original_test)
    )  # fmt: skip
    decision = decide(
        comparison, min_recent_gain=spec.min_recent_gain, max_original_drop=spec.max_original_drop
    )
    run.report.update(evaluation=comparison.to_dict(), decision=decision.to_dict())
    reporter.log(decision.reason)
    if not decision.promote:
        run.report.update(challenger=None, edge=None, optimize={"skipped": "not promoted"})
        return _done(run)
    tuned = _timed(run, "optimize", reporter, lambda: _optimize(run, edge, challenger, data))
    with reporter.registering():
        reporter.step("register", STEPS["register"])
        start = time.perf_counter()
        _register(run, champion, challenger, data, comparison, decision, edge, tuned)
        run.seconds["register"] = round(time.perf_counter() - start, 3)
    return _done(run)


def _timed(run: Run, step: str, reporter: Reporter, do: Callable[[], Any]) -> Any:
    reporter.step(step, STEPS[step])
    start = time.perf_counter()
    value = do()
    run.seconds[step] = round(time.perf_counter() - start, 3)
    return value


def _done(run: Run) -> dict[str, Any]:
    return {**run.report, "seconds": dict(run.seconds)}


def _assemble(run: Run, manifest: Manifest) -> Assembled:
    spec = run.spec
    with DatasetLibrary.open(run.settings) as library:
        source, parent = parent_splits(manifest, library)
        recent = recent_sets(spec.data, library, parent.train, holdout=spec.holdout, seed=spec.seed)
    data = assemble(source, parent, recent, repeat=spec.recent_repeat, name=f"{manifest.name}-mix")
    if not len(data.holdout):
        raise DataError(
            "the recent data sets leave no sample to hold out (every class has one labelled "
            "sample), so the challenger cannot be judged on recent data",
            hint="label more samples: at least two of some class",
        )
    run.report["mix"] = data.to_dict()
    return data


def _mix_line(data: Assembled) -> str:
    mix = data.to_dict()
    return (
        f"mix: {mix['train_samples']} train samples ({mix['recent_share_of_train']:.0%} recent, "
        f"repeated x{data.repeat}), {mix['val_samples']} val; judged on "
        f"{mix['holdout_samples']} recent hold-out + {mix['original_test_samples']} original test"
    )


def _train(run: Run, champion: ModelVersion, data: Assembled, reporter: Reporter) -> Any:
    from edgeloop.pipeline.retrain_model import fetch_checkpoint, train_challenger
    from edgeloop.pipeline.retrain_model import warm_start_source as source

    spec, warm = run.spec, None
    if spec.init is Init.CHAMPION:
        where = source(champion.manifest, spec.checkpoint, str(champion.ref))
        if where == "given" and spec.checkpoint is not None:
            warm = Path(spec.checkpoint)
        else:
            with Registry.open(run.settings) as registry:
                warm = fetch_checkpoint(champion.manifest, registry.artifacts, run.work / "warm")
        reporter.log(f"warm start from {champion.ref}'s checkpoint ({where})")
    made = train_challenger(
        champion.manifest, data.mix, run.work, warm=warm, epochs=spec.epochs, seed=spec.seed
    )
    run.report["train"] = made.to_dict()
    reporter.log(
        f"trained {made.trained.epochs_run} epochs (best {made.trained.best_epoch}) in "
        f"{made.trained.train_seconds:.1f} s"
    )
    return made


def _optimize(run: Run, edge: EdgeRecipe | None, challenger: Any, data: Assembled) -> Any:
    """The champion's edge recipe on the challenger, measured on held-out data only."""
    from edgeloop.optimize.pareto import Budget
    from edgeloop.optimize.tune import tune

    if edge is None:
        run.report["optimize"] = {"skipped": "the champion has no edge variant to rebuild"}
        return None
    if not run.spec.optimize:
        run.report["optimize"] = {"skipped": "turned off (--no-optimize)"}
        return None
    # Calibration and the variant's accuracy come from data no weight was fitted on: the
    # original test split and the recent hold-out (recipes that fine-tune would train on it).
    held = np.concatenate([data.original_test.x, data.holdout.x])
    labels = np.concatenate([data.original_test.y, data.holdout.y])
    path = run.work / "edge-data.npz"
    buf = io.BytesIO()
    classes = np.asarray(data.holdout.classes, dtype=np.str_)
    np.savez(buf, x=held.astype(np.float32), y=labels, classes=classes)
    write_atomic(path, buf.getvalue())
    tuned = tune(
        challenger.onnx,
        str(path),
        Budget(),
        run.work / "variants",
        recipes=[edge.recipe],
        checkpoint=challenger.checkpoint,
        seed=run.spec.seed,
        runs=run.spec.bench_runs,
    )
    # The champion's recipe is rebuilt as it is (not re-chosen on this run's latency): it is
    # registered when it keeps the accuracy floor tune derived from the challenger's own.
    rows = {c.recipe: (c.error or "measured") for c in tuned.tried}
    cand = next(c for c in tuned.tried if c.recipe == edge.recipe)
    point = cand.point
    fails = [cand.error or "not measured"] if point is None else tuned.budget.violations(point)
    against = None
    if not fails:  # what the fleet would serve is judged by the job's rule too
        rebuilt = Path(tuned.row(edge.recipe)["output"])
        against, drop = _edge_against_champion(run, edge, rebuilt, data.original_test)
        if drop > run.spec.max_original_drop + 1e-6:
            fails.append(
                f"the rebuilt variant loses {drop * 100:.2f} pp on the original test split "
                f"against the champion's edge variant {edge.ref} (the rule allows "
                f"{run.spec.max_original_drop * 100:.2f} pp)"
            )
    run.report["optimize"] = {
        "edge": edge.to_dict(),
        "tried": rows,
        "rebuilt": None if fails else edge.recipe,
        "why_not": "; ".join(fails) or None,
        "budget": tuned.budget_note,
        "original_test": against,
    }
    return None if fails else dataclasses.replace(tuned, chosen=point)


def _edge_against_champion(
    run: Run, edge: EdgeRecipe, rebuilt: Path, test: Any
) -> tuple[dict[str, Any], float]:
    """The rebuilt edge variant and the champion's edge variant (what the fleet serves now),
    both with ONNX Runtime on the parent's original test split: the figures and the drop."""
    from edgeloop.pipeline.retrain_eval import score

    with Registry.open(run.settings) as registry:
        served = registry.resolve(edge.ref)[1]
        old = score(Path(served), test, "original")
    new = score(rebuilt, test, "original")
    figures = {"champion_edge": old.to_dict(), "rebuilt_edge": new.to_dict(),
               "drop_pp": round((old.accuracy - new.accuracy) * 100, 2)}  # fmt: skip
    return figures, old.accuracy - new.accuracy


def _register(
    run: Run,
    champion: ModelVersion,
    challenger: Any,
    data: Assembled,
    comparison: Comparison,
    decision: Decision,
    edge: EdgeRecipe | None,
    tuned: Any,
) -> None:
    from edgeloop.optimize.tune import chosen_manifest
    from edgeloop.pipeline.retrain_model import store_checkpoint
    from edgeloop.pipeline.retrain_register import challenger_manifest, register_all, train_seed

    spec = run.spec
    lineage = {
        "job_id": run.job_id,
        "trigger": spec.trigger.value,
        "parent": str(champion.ref),
        "datasets": [r["ref"] for r in run.report["mix"]["recent"]],
        "init": challenger.init,
        "mix": run.report["mix"],
        "evaluation": comparison.to_dict(),
        "decision": decision.to_dict(),
    }
    manifest = challenger_manifest(
        champion, challenger.export, challenger.trained, data.mix.train, lineage
    )
    with Registry.open(run.settings) as registry:
        stored = store_checkpoint(challenger.checkpoint, registry.artifacts)
    manifest = _with_recipe(manifest, checkpoint=stored)
    edge_pair = None
    if edge is not None and tuned is not None and tuned.chosen is not None:
        edge_manifest = chosen_manifest(
            tuned,
            edge.name,
            parent=None,
            parent_file=challenger.onnx,
            dataset=str(champion.manifest.dataset or ""),
            data_hash=champion.manifest.source_data_hash,
            seed=train_seed(champion.manifest),
        )
        edge_manifest = _with_recipe(edge_manifest, retrain_job=run.job_id)
        edge_pair = (Path(tuned.row(tuned.chosen.recipe)["output"]), edge_manifest)
    new, new_edge = register_all(
        run.settings, (challenger.onnx, manifest), edge_pair, data.mix.train
    )
    run.report.update(challenger=str(new), edge=None if new_edge is None else str(new_edge))


def _with_recipe(manifest: Manifest, **extra: Any) -> Manifest:
    return dataclasses.replace(manifest, recipe={**dict(manifest.recipe), **extra})


class JobCancelledError(EdgeError):
    """The job was cancelled on request (a recorded outcome, not a failure)."""

    exit_code = 130
    http_status = 409
