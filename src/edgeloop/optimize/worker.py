"""Run one recipe in its own process: ``python -m edgeloop.optimize.worker`` (JSON in, JSON out).

The search runs every recipe here so a crash (a segfault in a converter, an out-of-memory kill)
ends one candidate, not the search. Input on stdin: ``{"recipe", "onnx", "checkpoint", "data",
"seed", "out_dir", "runs", "result"}``; output: one JSON object written to the ``result`` path
(not stdout, which libraries print progress to): the candidate's row, or
``{"error", "message", "hint"}`` for an EdgeError.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgeloop.core.errors import EdgeError


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Apply the recipe, then measure the result on the held-out test split.

    ``latency_ms`` is the batch-1 p50 on the fastest engine (``engine``); ``measurement`` is
    :func:`edgeloop.bench.benchmark`'s ONNX Runtime run in its own process (peak RSS, accuracy).
    """
    from edgeloop.bench.measure import benchmark
    from edgeloop.data import load_data, stratified_split
    from edgeloop.formats.parity import measure_parity, onnx_predictor
    from edgeloop.optimize.base import ModelSource
    from edgeloop.optimize.engines import OPENVINO_F32, ORT, available_setups, measure_engines
    from edgeloop.optimize.recipe import Recipe, run_recipe

    recipe = Recipe.parse(job["recipe"])
    splits = stratified_split(load_data(job["data"]), val=0.15, test=0.15, seed=job["seed"])
    parent = Path(job["onnx"])
    checkpoint = Path(job["checkpoint"]) if job.get("checkpoint") else None
    variants = run_recipe(recipe, ModelSource(parent, checkpoint), splits, Path(job["out_dir"]))
    output = variants[-1].path if variants else parent
    parity = measure_parity(
        onnx_predictor(parent),
        onnx_predictor(output),
        splits.test.x,
        split=f"{splits.test.name} test",
    )
    m = benchmark(
        output,
        batch_size=1,
        runs=int(job.get("runs", 300)),
        data=splits.test,
        split_name=f"{splits.test.name} test ({len(splits.test)} samples)",
        isolate=True,
    )
    # The engine is part of the variant: time it on each engine that computes what the accuracy
    # above was measured on (ONNX Runtime, and OpenVINO pinned to f32 -- its bf16 default would
    # change the numbers), and keep the fastest. The server runs OpenVINO pinned to f32 as well.
    setups = [s for s in available_setups()[0] if s in (ORT, OPENVINO_F32)]
    engines = measure_engines(
        output,
        splits.test.x.astype("float32"),
        setups=setups,
        threads=m.threads,
        runs=min(int(job.get("runs", 300)), 200),
    )
    winner = engines.winner(1)
    return {
        "recipe": str(recipe),
        "output": str(output),
        "accuracy": m.accuracy,
        "latency_ms": winner.latency_ms.p50,
        "engine": winner.setup.engine.value,
        "engines": engines.to_dict(),
        "size_bytes": m.size_bytes,
        "peak_rss_mb": m.peak_rss_mb,
        "parity": parity.to_dict(),
        "measurement": m.to_dict(),
        "steps": [v.to_dict() for v in variants],
        "checkpoint": None
        if not variants or variants[-1].checkpoint is None
        else str(variants[-1].checkpoint),
    }


def main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        result = run(job)
    except EdgeError as exc:
        result = exc.to_dict()
    target = Path(job["result"])
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(target)


if __name__ == "__main__":
    main()
