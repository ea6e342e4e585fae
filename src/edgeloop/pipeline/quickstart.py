"""The loop end to end on a bundled data set, every figure measured in this run.

The quickstart is a list of stages (:func:`quickstart_stages`): load -> clean -> split -> train ->
export (+ parity) -> bench -> register -> optimize -> convert -> serve -> fleet -> monitor. Each
entry reads
its typed inputs from the stages before it and calls a stage module with them; adding a stage is
adding an entry. :mod:`edgeloop.pipeline.report` writes the result out.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from edgeloop.core.settings import Settings
from edgeloop.pipeline.bench import Benched, bench
from edgeloop.pipeline.data import Cleaned, Loaded, Split, clean, load, split
from edgeloop.pipeline.export import Exported, export
from edgeloop.pipeline.optimize import Optimized, Parent, optimize
from edgeloop.pipeline.register import Registered, model_manifest, register
from edgeloop.pipeline.stage import Outcomes, Skipped, Stage, StageResult, run_stages
from edgeloop.pipeline.train import Trained, train

CONVERT_SAYS = "convert: every edge target the installed converters make, each one verified"
SERVE_SAYS = "serve: the model and its chosen variant in an `edgeloop serve` process, 2 s of load"
FLEET_SAYS = "fleet: control plane + 3 agents, staged rollout of the chosen variant, broken v2"
MONITOR_SAYS = "monitor: the held-out split through one node, shift injected, labels posted back"
RETRAIN_SAYS = "retrain: the shifted field captured and labelled, a job, its challenger in waves"
FEDERATED_SAYS = "federated: FedAvg rounds across the fleet's agents, each on its own data share"


@dataclass(frozen=True)
class QuickstartConfig:
    """What the quickstart runs on; defaults reach >= 97 % on digits in well under a minute."""

    dataset: str = "digits"
    arch: str = "cnn"
    model_name: str = "digits-cnn"
    seed: int = 0
    epochs: int = 60
    bench_runs: int = 300
    bench_batch: int = 32
    # The optimization search: ONNX-level methods plus structured pruning, each in its own
    # process. dynamic-int8 stays in on purpose: it shows ConvInteger's cost on a conv net.
    recipes: tuple[str, ...] = (
        "static-int8",
        "dynamic-int8",
        "fp16",
        "prune-structured(ratio=0.5,epochs=5)+static-int8",
    )
    # Convert the parent to every edge target the installed converters make (issue 4).
    convert: bool = True
    # Roll the chosen variant out to a local fleet of three agent processes (issue 6).
    fleet: bool = True
    # Stream the held-out split through one node of that fleet with a shift (issue 12).
    monitor: bool = True
    # Captures of the shifted field -> a data set -> a retraining job -> waves (issue 13).
    retrain: bool = True
    # A few federated rounds across that fleet's agents, each on its share of the data (issue 14).
    federated: bool = True


@dataclass(frozen=True)
class QuickstartResult:
    """Every stage's outcome (result or why skipped, and its wall time) and the machine."""

    outcomes: Outcomes
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report.json body: each stage's block plus ``stages``, ``skipped``,
        ``stage_seconds`` and ``machine``."""
        return {**self.outcomes.report(), "machine": self.machine}


@dataclass(frozen=True)
class _Env:
    """What every quickstart stage may read besides the earlier stages' results."""

    cfg: QuickstartConfig
    settings: Settings
    out_dir: Path
    say: Callable[[str], None]
    progress: bool
    hold: ExitStack | None = None  # keeps the fleet running for the monitor stage


def run_quickstart(
    out_dir: Path,
    settings: Settings,
    config: QuickstartConfig | None = None,
    *,
    progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> QuickstartResult:
    """Run the quickstart's stages in order; write the models and plots into ``out_dir``.

    A stage that cannot run here (an extra not installed, nothing chosen to roll out, turned
    off) is recorded as skipped with the reason, and the rest runs.

    Raises:
        EdgeError: from whichever stage failed, unchanged (its message says what to fix).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as hold:  # the fleet runs from its stage to the end of the monitor stage
        stages = quickstart_stages(
            out_dir, settings, config, progress=progress, on_stage=on_stage, hold=hold
        )
        outcomes = run_stages(stages, on_stage=on_stage)
    machine = {"python": platform.python_version(), "platform": platform.platform()}
    return QuickstartResult(outcomes, machine)


def quickstart_stages(
    out_dir: Path,
    settings: Settings,
    config: QuickstartConfig | None = None,
    *,
    progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
    hold: ExitStack | None = None,
) -> list[Stage]:
    """The quickstart as a list of stages, in the order they run (see :func:`run_quickstart`).

    Given ``hold``, the fleet stage leaves its fleet running until ``hold`` closes, for the
    monitor stage; without it the fleet stops after its stage and the monitor stage is skipped.
    """
    cfg = config or QuickstartConfig()
    env = _Env(cfg, settings, out_dir, on_stage or (lambda _line: None), progress, hold)
    recipes = ", ".join(cfg.recipes)
    return [
        Stage("load", partial(_load, env), says=f"load {cfg.dataset}"),
        Stage("clean", partial(_clean, env), needs=("load",)),
        Stage("split", partial(_split, env), needs=("clean",)),
        Stage("train", partial(_train, env), needs=("split",), says=f"train {cfg.arch}"),
        Stage(
            "export", partial(_export, env), needs=("train",), says="export to ONNX, check parity"
        ),
        Stage("bench", partial(_bench, env), needs=("export",)),
        Stage("register", partial(_register, env), needs=("bench",)),
        Stage(
            "optimize", partial(_optimize, env), needs=("register",), says=f"optimize: {recipes}"
        ),
        Stage("convert", partial(_convert, env), needs=("register",), says=CONVERT_SAYS),
        Stage("serve", partial(_serve, env), needs=("optimize",), says=SERVE_SAYS),
        Stage("fleet", partial(_fleet, env), needs=("optimize",), says=FLEET_SAYS),
        Stage("monitor", partial(_monitor, env), needs=("fleet",), says=MONITOR_SAYS),
        Stage("retrain", partial(_retrain, env), needs=("monitor",), says=RETRAIN_SAYS),
        Stage("federated", partial(_federated, env), needs=("fleet",), says=FEDERATED_SAYS),
    ]


def _load(env: _Env, done: Outcomes) -> Loaded:
    return load(env.cfg.dataset)


def _clean(env: _Env, done: Outcomes) -> Cleaned:
    return clean(done.need(Loaded).dataset)


def _split(env: _Env, done: Outcomes) -> Split:
    return split(done.need(Cleaned).dataset, seed=env.cfg.seed)


def _train(env: _Env, done: Outcomes) -> Trained:
    cfg = env.cfg
    return train(
        done.need(Split).splits,
        done.need(Cleaned).dataset,
        cfg.arch,
        env.out_dir / "checkpoint",
        epochs=cfg.epochs,
        seed=cfg.seed,
        progress=env.progress,
    )


def _export(env: _Env, done: Outcomes) -> Exported:
    trained, test = done.need(Trained).result, done.need(Split).splits.test
    path = env.out_dir / f"{env.cfg.model_name}.onnx"
    return export(trained.module, trained.arch, test.x, path, split=f"{test.name} test")


def _bench(env: _Env, done: Outcomes) -> Benched:
    data, cfg = done.need(Split), env.cfg
    onnx = done.need(Exported).onnx
    batches = (1, cfg.bench_batch)
    return bench(onnx, data.splits.test, data.test_name, batch_sizes=batches, runs=cfg.bench_runs)


def _register(env: _Env, done: Outcomes) -> Registered:
    exported = done.need(Exported)
    manifest = model_manifest(
        env.cfg.model_name,
        exported.result,
        done.need(Trained).result,
        done.need(Cleaned).dataset,
        done.need(Benched).measurements,
        split_seed=env.cfg.seed,
    )
    splits = done.need(Split).splits
    return register(
        exported.onnx, manifest, env.settings, reference=splits.train, held_out=splits.val
    )


def _optimize(env: _Env, done: Outcomes) -> Optimized:
    cfg = env.cfg
    parent = Parent(
        onnx=done.need(Exported).onnx,
        ref=done.need(Registered).ref,
        data=cfg.dataset,
        data_hash=done.need(Cleaned).dataset.content_hash,
        checkpoint=done.need(Trained).checkpoint,
        reference=done.need(Split).splits.train,
        held_out=done.need(Split).splits.val,
    )
    return optimize(
        parent,
        cfg.recipes,
        env.out_dir,
        env.settings,
        edge_name=f"{cfg.model_name}-edge",
        seed=cfg.seed,
        runs=cfg.bench_runs,
        on_result=lambda c: env.say(f"  {c.recipe}: " + (c.error or "measured")),
    )


def _convert(env: _Env, done: Outcomes) -> StageResult | Skipped:
    from edgeloop.pipeline.convert import convert_stage

    cfg = env.cfg
    if not cfg.convert:
        return Skipped("turned off (QuickstartConfig.convert is False)")
    return convert_stage(
        done.need(Exported).onnx,
        done.need(Trained).checkpoint,
        cfg.dataset,
        cfg.seed,
        done.need(Registered).ref,
        env.settings,
        env.out_dir / "convert",
        runs=cfg.bench_runs,
        name=cfg.model_name,
    )


def _serve(env: _Env, done: Outcomes) -> StageResult | Skipped:
    from edgeloop.pipeline.serve import serve_stage

    models = {env.cfg.model_name: done.need(Exported).onnx}
    edge = done.need(Optimized).edge
    if edge is not None:
        models[edge.manifest.name] = edge.file
    return serve_stage(models, done.need(Split).splits.test)


def _fleet(env: _Env, done: Outcomes) -> StageResult | Skipped:
    from edgeloop.pipeline.federated_stage import fleet_share
    from edgeloop.pipeline.fleet import FleetParent, fleet_stage

    if not env.cfg.fleet:
        return Skipped("turned off (--no-fleet)")
    edge = done.need(Optimized).edge
    if edge is None:
        return Skipped("no variant met the accuracy budget, so there is nothing to roll out")
    # The fleet's control plane keeps its own registry: the variant goes there without a
    # parent link (its parent lives in this registry), the link kept in the recipe.
    parent = str(done.need(Registered).ref)
    manifest = dataclasses.replace(
        edge.manifest,
        parent=None,
        recipe={**edge.manifest.recipe, "parent_in_quickstart_registry": parent},
    )
    from edgeloop.registry import Registry

    with Registry.open(env.settings) as registry:  # the reference profile made at registration
        profile = registry.profile(edge.ref)[1]
    test = done.need(Split).splits.test
    # The fp32 parent goes first, with its checkpoint: the fleet's registry then links the
    # variant to it, and the retrain stage's job rebuilds the variant from a retrained parent.
    up = FleetParent(done.need(Exported).onnx, done.need(Registered).manifest,
                     done.need(Trained).checkpoint)  # fmt: skip
    shares = fleet_share(env.cfg.dataset, env.cfg.federated)  # the federated stage's data
    folder = env.out_dir / "fleet"
    return fleet_stage(
        edge.file, manifest, test, folder, profile, env.hold, fl_data=shares, parent=up
    )


def _monitor(env: _Env, done: Outcomes) -> StageResult | Skipped:
    from edgeloop.pipeline.fleet import FleetStageResult
    from edgeloop.pipeline.monitor import monitor_stage

    if not env.cfg.monitor:
        return Skipped("turned off (--no-monitor)")
    fleet = done.need(FleetStageResult)
    test = done.need(Split).splits.test
    model = fleet.rollout["ref"].rpartition(":")[0]
    return monitor_stage(fleet.live, model, test, env.out_dir, seed=env.cfg.seed)


def _retrain(env: _Env, done: Outcomes) -> StageResult | Skipped:
    from edgeloop.pipeline.fleet import FleetStageResult
    from edgeloop.pipeline.retrain_stage import Champion, field_split, retrain_stage

    if not env.cfg.retrain:
        return Skipped("turned off (--no-retrain)")
    fleet, splits = done.need(FleetStageResult), done.need(Split).splits
    champion = Champion(fleet.rollout.get("parent"), fleet.rollout["ref"])
    field = field_split(splits)  # train + validation: the test split stays unseen
    return retrain_stage(fleet.live, champion, field, splits.test, seed=env.cfg.seed)


def _federated(env: _Env, done: Outcomes) -> StageResult | Skipped:
    from edgeloop.pipeline.federated_stage import federated_stage
    from edgeloop.pipeline.fleet import FleetStageResult

    if not env.cfg.federated:
        return Skipped("turned off (--no-federated)")
    fleet = done.need(FleetStageResult).live
    return federated_stage(fleet, env.cfg.dataset, env.out_dir)
