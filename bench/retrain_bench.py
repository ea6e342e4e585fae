"""Retraining after an injected shift, on the digits CNN: how much of the lost accuracy comes back.

    .venv/bin/python bench/retrain_bench.py --out /tmp/retrain-bench [--format json]

1. The champion: the quickstart's recipe (digits, cleaned, split seed 0, CNN, 60 epochs),
   registered as digits-cnn:1, and its edge variant (static-int8, chosen by the optimize stage)
   registered as digits-cnn-edge:1 with digits-cnn:1 as parent.
2. The shift: brightness and contrast, ``x' = offset + gain * x`` (a camera whose exposure
   changed). The "captured" recent samples are ``--recent`` shifted images drawn from the
   champion's train and validation splits, labelled from the data set (the labels stand in for a
   person's), stored as the data set version ``shifted:1``.
3. The job: ``submit`` + ``LocalProcessExecutor``, exactly what ``edgeloop retrain digits-cnn
   --data shifted:1 --checkpoint DIR`` runs; wall time from submit to the end state.
4. The figures, on data no model ever saw in any form: the ORIGINAL test split and the SAME test
   images shifted. Lost = champion(original) - champion(shifted); recovered share =
   (challenger(shifted) - champion(shifted)) / lost; loss on the original split = champion(original)
   - challenger(original). The job's own decision (on its recent hold-out) is reported beside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def champion(home: Path, epochs: int, runs: int) -> tuple[Any, Any, Path, Any]:
    """Train, register and optimize the champion; or, when ``home`` holds it already (an
    earlier run of this script), use it as it is."""
    from edgeloop.core.settings import Settings
    from edgeloop.pipeline.data import clean, load, split
    from edgeloop.pipeline.export import export
    from edgeloop.pipeline.optimize import Parent, optimize
    from edgeloop.pipeline.register import model_manifest, register
    from edgeloop.pipeline.train import train
    from edgeloop.registry.registry import Registry

    settings = Settings.load(home)
    ds = clean(load("digits").dataset).dataset
    splits = split(ds, seed=0).splits
    if (home / "registry.db").exists():
        with Registry.open(settings) as registry:
            edge = max(registry.list("digits-cnn-edge"), key=lambda v: v.version, default=None)
        return settings, splits, home / "checkpoint", edge
    trained = train(splits, ds, "cnn", home / "checkpoint", epochs=epochs, seed=0, progress=False)
    onnx = export(
        trained.result.module,
        trained.result.arch,
        splits.test.x,
        home / "digits-cnn.onnx",
        split=f"{splits.test.name} test",
    )
    manifest = model_manifest("digits-cnn", onnx.result, trained.result, ds, (), split_seed=0)
    ref = register(onnx.onnx, manifest, settings, reference=splits.train).ref
    parent = Parent(onnx.onnx, ref, "digits", ds.content_hash, trained.checkpoint, splits.train)
    edge = optimize(
        parent, ["static-int8"], home / "optimize", settings,
        edge_name="digits-cnn-edge", seed=0, runs=runs,
    )  # fmt: skip
    return settings, splits, trained.checkpoint, edge.edge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=60, help="the champion's epochs")
    parser.add_argument("--retrain-epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--recent", type=int, default=300, help="captured shifted samples")
    parser.add_argument("--offset", type=float, default=0.3)
    parser.add_argument("--gain", type=float, default=0.6)
    parser.add_argument("--runs", type=int, default=100, help="bench runs per variant")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args()

    from edgeloop.data.samples import SampleSet
    from edgeloop.pipeline.retrain_eval import score
    from edgeloop.pipeline.retrain_executor import LocalProcessExecutor
    from edgeloop.pipeline.retrain_job import submit
    from edgeloop.pipeline.retrain_spec import RetrainSpec
    from edgeloop.registry.dataset_library import DatasetLibrary
    from edgeloop.registry.datasets import Provenance
    from edgeloop.registry.job_store import JobStore
    from edgeloop.registry.registry import Registry

    home = args.out / "home"
    start = time.perf_counter()
    settings, splits, checkpoint, edge = champion(home, args.epochs, args.runs)
    champion_s = time.perf_counter() - start

    def shift(x: np.ndarray) -> np.ndarray:
        return np.clip(args.offset + args.gain * x, 0.0, 1.0).astype(np.float32)

    pool_x = np.concatenate([splits.train.x, splits.val.x])
    pool_y = np.concatenate([splits.train.y, splits.val.y])
    rows = np.random.default_rng(0).choice(len(pool_x), args.recent, replace=False)
    captured = SampleSet(
        shift(pool_x[rows]), pool_y[rows].astype(np.int64),
        tuple(f"req-{i}" for i in range(len(rows))), splits.train.classes, splits.train.modality,
    )  # fmt: skip
    with DatasetLibrary.open(settings) as library:
        held = [
            v for v in library.list("shifted") if v.entry.content_hash == captured.content_hash()
        ]
        recent = (
            held[0].ref
            if held
            else library.add(
                "shifted", captured, Provenance(model="digits-cnn:1", reasons=("injected-shift",))
            ).ref
        )

    spec = RetrainSpec.from_dict(
        {
            "model": "digits-cnn:1",
            "data": [str(recent)],
            "checkpoint": str(checkpoint),
            "epochs": args.retrain_epochs,
            "bench_runs": args.runs,
        }
    )
    store = JobStore(settings.db_url)
    executor = LocalProcessExecutor()
    start = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    job = submit(spec, settings, store, executor)
    code = executor.wait(job.runner, 3600)
    job_s = time.perf_counter() - start
    time.sleep(0.5)  # the executor's waiter thread reaps it: its CPU time counts from then on
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    job_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    job = store.get(job.id)
    result = dict(job.result or {})

    test = splits.test
    shifted = type(test)(
        name=f"{test.name}-shifted", x=shift(test.x), y=test.y, classes=test.classes,
        modality=test.modality,
    )  # fmt: skip
    with Registry.open(settings) as registry:
        old = registry.resolve(registry.show(_ref("digits-cnn:1")).ref)[1]
        new = None if not result.get("challenger") else registry.resolve(
            registry.show(_ref(result["challenger"])).ref)[1]  # fmt: skip
    figures = _figures(score, old, new, test, shifted)
    body = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "shift": f"x' = clip({args.offset} + {args.gain} * x, 0, 1)",
        "recent_samples": args.recent,
        "champion_seconds": round(champion_s, 1),
        "champion_edge": None if edge is None else str(edge.ref),
        "job": {
            "id": job.id,
            "state": job.state.value,
            "exit": code,
            "reason": job.reason,
            "wall_seconds": round(job_s, 1),
            "cpu_seconds": round(job_cpu, 1),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "cpus": os.cpu_count(),
            "step_seconds": result.get("seconds"),
            "challenger": result.get("challenger"),
            "edge": result.get("edge"),
            "mix": result.get("mix"),
            "evaluation": result.get("evaluation"),
            "optimize": result.get("optimize"),
            "train": result.get("train"),
        },
        **figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrain_results.json").write_text(json.dumps(body, indent=2))
    if args.format == "json":
        print(json.dumps(body, indent=2))
    else:
        for key in ("recovered_share", "original_loss_pp", "shift_loss_pp"):
            print(f"{key}: {body[key]}")
        print(f"job: {job.state.value} in {job_s:.1f} s: {job.reason}")


def _ref(text: str) -> Any:
    from edgeloop.core.types import ModelRef

    return ModelRef.parse(text)


def _figures(score: Any, old: Path, new: Path | None, test: Any, shifted: Any) -> dict[str, Any]:
    c_orig = score(old, test, "original test").accuracy
    c_shift = score(old, shifted, "shifted test").accuracy
    out: dict[str, Any] = {
        "champion": {"original_test": c_orig, "shifted_test": c_shift},
        "shift_loss_pp": round((c_orig - c_shift) * 100, 2),
    }
    if new is None:
        reason = "no challenger was registered (see job.reason)"
        return {**out, "challenger": None, "recovered_share": reason, "original_loss_pp": reason}
    n_orig = score(new, test, "original test").accuracy
    n_shift = score(new, shifted, "shifted test").accuracy
    lost = c_orig - c_shift
    return {
        **out,
        "challenger": {"original_test": n_orig, "shifted_test": n_shift},
        "recovered_share": None if lost <= 0 else round((n_shift - c_shift) / lost, 4),
        "original_loss_pp": round((c_orig - n_orig) * 100, 2),
    }


if __name__ == "__main__":
    main()
