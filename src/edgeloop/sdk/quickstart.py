"""The loop end to end on a bundled data set, every figure measured in this run.

Stages (each extends as later parts land): load -> clean -> split -> train -> export (+ parity)
-> bench -> register. The result is a frozen value; :mod:`edgeloop.sdk.report` writes it out.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, Measurement, ModelRef, Parity
from edgeloop.data.dataset import Dataset

Stage = Callable[[str], None]


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


@dataclass(frozen=True)
class QuickstartResult:
    """What one quickstart run produced and measured."""

    stages: tuple[str, ...]
    dataset: dict[str, Any]
    cleaning: dict[str, Any]
    train: dict[str, Any]
    history: tuple[dict[str, float], ...]
    export: Parity
    onnx_path: Path
    checkpoint: Path
    measurements: tuple[Measurement, ...]
    registered: ModelRef
    tune: dict[str, Any]
    edge_model: ModelRef | None
    serving: dict[str, Any]
    stage_seconds: dict[str, float]
    conversion: dict[str, Any] | None = None
    fleet: dict[str, Any] | None = None
    machine: dict[str, Any] = field(default_factory=dict)

    def variant_rows(self) -> list[dict[str, Any]]:
        """One row per variant the search measured (the FP32 parent first)."""
        return [dict(row) for row in self.tune["tried"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": list(self.stages),
            "dataset": self.dataset,
            "clean": self.cleaning,
            "train": self.train,
            "history": list(self.history),
            "export": self.export.to_dict(),
            "bench": [m.to_dict() for m in self.measurements],
            "variants": self.variant_rows(),
            "pareto": self.tune["pareto"],
            "chosen": self.tune["chosen"],
            "tune": {k: self.tune[k] for k in ("objective", "budget", "budget_note", "closest")},
            "registry": {
                "ref": str(self.registered),
                "edge_ref": None if self.edge_model is None else str(self.edge_model),
            },
            "checkpoint": str(self.checkpoint),
            "serve": self.serving,
            "convert": self.conversion,
            "fleet": self.fleet,
            "stage_seconds": self.stage_seconds,
            "machine": self.machine,
        }


def run_quickstart(
    out_dir: Path,
    settings: Settings,
    config: QuickstartConfig | None = None,
    *,
    progress: bool = True,
    on_stage: Stage | None = None,
) -> QuickstartResult:
    """Run every built stage of the loop; write the ONNX file into ``out_dir``.

    Raises:
        EdgeError: from whichever stage failed, unchanged (its message says what to fix).
    """
    from edgeloop.bench.measure import benchmark
    from edgeloop.data import clean, load_bundled, stratified_split
    from edgeloop.formats.onnx_export import export_checked
    from edgeloop.optimize.pareto import Budget
    from edgeloop.optimize.plot import plot_pareto
    from edgeloop.optimize.tune import chosen_manifest, tune
    from edgeloop.registry import Registry
    from edgeloop.training.checkpoint import save_checkpoint
    from edgeloop.training.fit import FitConfig, fit
    from edgeloop.training.zoo import ArchConfig, deployable

    cfg = config or QuickstartConfig()
    say = on_stage or (lambda _s: None)
    seconds: dict[str, float] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()

    def done(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 3)
        clock = now

    say(f"load {cfg.dataset}")
    raw = load_bundled(cfg.dataset)
    done("load")
    say("clean")
    ds, cleaning = clean(raw)
    done("clean")
    splits = stratified_split(ds, val=0.15, test=0.15, seed=cfg.seed)
    done("split")

    say(f"train {cfg.arch}")
    arch = ArchConfig(arch=cfg.arch, input_shape=ds.sample_shape, num_classes=ds.num_classes)
    fit_cfg = FitConfig(epochs=cfg.epochs, seed=cfg.seed)
    trained = fit(arch, splits, fit_cfg, progress=progress)
    # Kept so weight-changing optimizations (pruning, QAT) can start from it later.
    checkpoint = save_checkpoint(
        out_dir / "checkpoint", trained.module, arch, fit_cfg, trained.test_metrics, dataset=ds
    )
    done("train")

    say("export to ONNX and check parity")
    onnx_path = out_dir / f"{cfg.model_name}.onnx"
    module = deployable(trained.module, arch)
    exported = export_checked(module, splits.test.x, onnx_path, split=f"{ds.name} test")
    done("export")

    say("bench")
    test_name = f"{ds.name} test ({len(splits.test)} samples)"
    measurements = tuple(
        benchmark(
            onnx_path,
            batch_size=b,
            runs=cfg.bench_runs,
            data=splits.test,
            split_name=test_name,
            isolate=True,
        )
        for b in (1, cfg.bench_batch)
    )
    done("bench")

    say("register")
    import torch

    manifest = Manifest(
        name=cfg.model_name,
        format="onnx",
        inputs=exported.info.inputs,
        outputs=exported.info.outputs,
        source_data_hash=ds.content_hash,
        dataset=ds.name,
        recipe={"arch": arch.to_dict(), "fit": fit_cfg.to_dict(), "split_seed": cfg.seed},
        parity=exported.parity,
        measurements=measurements,
        metrics=trained.test_metrics.to_dict_floats(),
        tools={"torch": torch.__version__, "exporter": exported.exporter, **_tool_versions()},
    )
    with Registry.open(settings) as registry:
        version = registry.publish(onnx_path, manifest)
    parent_ref = ModelRef(version.name, version.version)
    done("register")

    say("optimize: " + ", ".join(cfg.recipes) + " (each in its own process)")
    tuned = tune(
        onnx_path,
        cfg.dataset,
        Budget(),
        out_dir / "variants",
        recipes=["fp32", *cfg.recipes],
        checkpoint=checkpoint,
        seed=cfg.seed,
        runs=cfg.bench_runs,
        on_result=lambda c: say(f"  {c.recipe}: " + ("measured" if c.error is None else c.error)),
    )
    edge_ref = None
    if tuned.chosen is not None:
        edge_manifest = chosen_manifest(
            tuned,
            f"{cfg.model_name}-edge",
            parent=parent_ref,
            parent_file=onnx_path,
            dataset=cfg.dataset,
            data_hash=ds.content_hash,
            seed=cfg.seed,
        )
        with Registry.open(settings) as registry:
            edge = registry.publish(Path(tuned.row(tuned.chosen.recipe)["output"]), edge_manifest)
        edge_ref = ModelRef(edge.name, edge.version)
    points = [p for c in tuned.tried if (p := c.point) is not None]
    plot_pareto(points, tuned.pareto, tuned.chosen, out_dir / "pareto.png")
    done("optimize")

    conversion = None
    if cfg.convert:
        say("convert: every edge target the installed converters make, each one verified")
        conversion = _convert_stage(onnx_path, checkpoint, cfg, parent_ref, settings, out_dir)
        done("convert")

    served = {cfg.model_name: onnx_path}
    if tuned.chosen is not None:
        edge_file = out_dir / f"{cfg.model_name}-edge.onnx"
        shutil.copyfile(tuned.row(tuned.chosen.recipe)["output"], edge_file)
        served[f"{cfg.model_name}-edge"] = edge_file
    say("serve: " + ", ".join(served) + " in an `edgeloop serve` process, 2 s of load each")
    serving = _serve_stage(served, splits.test)
    done("serve")

    fleet = None
    if cfg.fleet and tuned.chosen is not None:
        say("fleet: control plane + 3 agents, staged rollout of the chosen variant, broken v2")
        # The fleet's control plane keeps its own registry: the variant goes there without a
        # parent link (its parent lives in this registry), the link kept in the recipe.
        fleet_manifest = dataclasses.replace(
            edge_manifest,
            parent=None,
            recipe={**edge_manifest.recipe, "parent_in_quickstart_registry": str(parent_ref)},
        )
        fleet = _fleet_stage(edge_file, fleet_manifest, splits.test, out_dir / "fleet")
        done("fleet")

    return QuickstartResult(
        stages=(
            "load",
            "clean",
            "split",
            "train",
            "export",
            "bench",
            "register",
            "optimize",
            *(("convert",) if conversion is not None else ()),
            "serve",
            *(("fleet",) if fleet is not None else ()),
        ),
        dataset={
            "name": ds.name,
            "source": ds.source,
            "hash": ds.content_hash,
            "samples": len(ds),
            "sample_shape": list(ds.sample_shape),
            "classes": len(ds.classes),
            "split": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        },
        cleaning=cleaning.to_dict(),
        train=trained.summary(),
        history=tuple(r.to_dict() for r in trained.history),
        export=exported.parity,
        onnx_path=onnx_path,
        checkpoint=checkpoint,
        measurements=measurements,
        registered=parent_ref,
        tune=tuned.to_dict(),
        edge_model=edge_ref,
        serving=serving,
        stage_seconds=seconds,
        conversion=conversion,
        fleet=fleet,
        machine={"python": platform.python_version(), "platform": platform.platform()},
    )


def _serve_stage(models: dict[str, Path], test: Dataset) -> dict[str, Any]:
    """Serve and load the models; without the ``serve`` extra say so instead of failing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        return {
            "skipped": f"the serve extra is not installed ({', '.join(missing)} missing): "
            "pip install 'edgeloop[serve]'"
        }
    from edgeloop.sdk.serve_stage import serve_and_load

    return serve_and_load(models, test).to_dict()


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _convert_stage(
    onnx: Path,
    checkpoint: Path,
    cfg: QuickstartConfig,
    parent: ModelRef,
    settings: Settings,
    out_dir: Path,
) -> dict[str, Any]:
    """Every target whose converter is installed, verified, timed and registered under the
    parent; a missing converter or a failed conversion is reported, never fatal."""
    from edgeloop.sdk.convert_stage import available_targets, convert_and_register

    targets, skipped = available_targets()
    return convert_and_register(
        onnx,
        checkpoint,
        cfg.dataset,
        cfg.seed,
        targets,
        skipped,
        parent,
        settings,
        out_dir / "convert",
        runs=cfg.bench_runs,
        name=cfg.model_name,
    )


def _fleet_stage(model: Path, manifest: Manifest, test: Dataset, folder: Path) -> dict[str, Any]:
    """Roll the chosen variant out to a local fleet; without the fleet extras say so."""
    import importlib.util

    missing = [m for m in ("tuf", "fastapi", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"not installed: {', '.join(missing)} (pip install 'edgeloop[control]')"}
    from edgeloop.sdk.fleet_stage import run_fleet_stage

    if folder.exists():
        shutil.rmtree(folder)
    return run_fleet_stage(model, manifest, test, folder).to_dict()
