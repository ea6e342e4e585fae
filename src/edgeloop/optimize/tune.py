"""``edgeloop tune``: try recipes under a budget, each in its own process; keep the Pareto set.

Like Edge Impulse's EON Tuner or Intel Neural Compressor's accuracy-aware tuning, except every
point is measured in this run on the held-out test split of the named data -- none is predicted.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import Manifest, Measurement, ModelRef, Parity
from edgeloop.optimize.pareto import Budget, Objective, Point, choose, closest, pareto_front
from edgeloop.optimize.recipe import BASELINE, Recipe

# Without a torch checkpoint only ONNX-level methods can run.
ONNX_RECIPES = ("fp32", "static-int8", "dynamic-int8", "fp16")
TORCH_RECIPES = (
    "prune-structured(ratio=0.5)",
    "prune-structured(ratio=0.5)+static-int8",
    "prune-unstructured(sparsity=0.8)",
    "qat",
)
WORKER_TIMEOUT_S = 900


@dataclass(frozen=True)
class Candidate:
    """One tried recipe: its measured row, or why it failed."""

    recipe: str
    row: dict[str, Any] | None
    error: str | None

    @property
    def point(self) -> Point | None:
        if self.row is None or self.row.get("accuracy") is None:
            return None
        return Point(
            self.recipe,
            float(self.row["accuracy"]),
            float(self.row["latency_ms"]),
            int(self.row["size_bytes"]),
            self.row.get("peak_rss_mb"),
        )


@dataclass(frozen=True)
class TuneResult:
    budget: Budget
    objective: Objective
    budget_note: str | None
    tried: tuple[Candidate, ...]
    pareto: tuple[Point, ...]
    chosen: Point | None
    closest: tuple[Point, ...]

    def row(self, recipe: str) -> dict[str, Any]:
        cand = next(c for c in self.tried if c.recipe == recipe)
        return dict(cand.row or {})

    def to_dict(self) -> dict[str, Any]:
        def variant(p: Point) -> dict[str, Any]:
            r = self.row(p.recipe)
            return {
                k: r.get(k)
                for k in (
                    "recipe",
                    "output",
                    "accuracy",
                    "latency_ms",
                    "engine",
                    "size_bytes",
                    "peak_rss_mb",
                    "parity",
                )
            }

        misses = {p.recipe: self.budget.violations(p) for p in self.closest}
        return {
            "objective": self.objective.value,
            "budget_note": self.budget_note,
            "budget": {
                k: getattr(self.budget, k)
                for k in ("max_latency_ms", "max_size_kb", "min_accuracy", "max_ram_mb")
            },
            "pareto": [variant(p) for p in self.pareto],
            "tried": [
                {
                    "recipe": c.recipe,
                    **(
                        {
                            k: (c.row or {}).get(k)
                            for k in (
                                "output",
                                "accuracy",
                                "latency_ms",
                                "engine",
                                "size_bytes",
                                "peak_rss_mb",
                            )
                        }
                    ),
                    "error": c.error,
                }
                for c in self.tried
            ],
            "chosen": None if self.chosen is None else variant(self.chosen),
            "closest": []
            if self.chosen is not None
            else [{**variant(p), "fails": misses[p.recipe]} for p in self.closest],
        }


def chosen_manifest(
    result: TuneResult,
    name: str,
    *,
    parent: ModelRef | None,
    parent_file: Path,
    dataset: str,
    data_hash: str | None,
    seed: int,
) -> Manifest:
    """The manifest that registers the chosen variant with its lineage and its measurement.

    Raises:
        ConfigError: nothing was chosen (no variant met the budget).
    """
    from edgeloop.formats.onnx_info import inspect_onnx

    if result.chosen is None:
        raise ConfigError("no variant met the budget, so there is nothing to register")
    row = result.row(result.chosen.recipe)
    info = inspect_onnx(row["output"])
    return Manifest(
        name=name,
        format="onnx",
        inputs=info.inputs,
        outputs=info.outputs,
        source_data_hash=data_hash,
        dataset=dataset,
        recipe={
            "recipe": row["recipe"],
            "parent_file": str(parent_file),
            "split_seed": seed,
            "objective": result.objective.value,
            "steps": row.get("steps", []),
            "engine": row.get("engine"),
            "engines": row.get("engines"),
        },
        parity=Parity.from_dict(row["parity"]),
        measurements=(Measurement.from_dict(row["measurement"]),),
        parent=parent,
    )


def default_recipes(has_checkpoint: bool) -> list[str]:
    return [*ONNX_RECIPES, *(TORCH_RECIPES if has_checkpoint else ())]


def tune(
    onnx: Path,
    data: str,
    budget: Budget,
    out_dir: Path,
    *,
    recipes: Sequence[str] | None = None,
    checkpoint: Path | None = None,
    seed: int = 0,
    runs: int = 300,
    objective: Objective = Objective.LATENCY,
    max_accuracy_drop: float | None = 0.01,
    on_result: Callable[[Candidate], None] | None = None,
) -> TuneResult:
    """Try each recipe in a fresh process; return every row, the Pareto set and the choice.

    Without ``budget.min_accuracy``, the accuracy floor is the parent's accuracy measured in this
    run minus ``max_accuracy_drop`` (1 pp by default), so a fast but useless variant never wins.

    Raises:
        ConfigError: a recipe that does not parse, torch recipes without a checkpoint, or data
            whose samples do not fit the parent's input.
        UntrustedArtifactError: ``onnx`` is not a valid ONNX model.
    """
    texts = list(recipes) if recipes else default_recipes(checkpoint is not None)
    parsed = [Recipe.parse(t) for t in texts]
    if BASELINE not in [str(r) for r in parsed]:
        parsed.insert(0, Recipe(()))  # the parent is always measured, in the same run
    if checkpoint is None and (bad := [str(r) for r in parsed if r.needs_checkpoint]):
        raise ConfigError(
            f"recipes {bad} change weights with training and need --checkpoint",
            hint="pass the folder `edgeloop train --out` wrote, or drop those recipes",
        )
    _check_data(onnx, data)
    tried: list[Candidate] = []
    for i, recipe in enumerate(parsed):
        job_dir = out_dir / f"{i:02d}-{_slug(str(recipe))}"
        cand = _run_one(recipe, onnx, checkpoint, data, seed, job_dir, runs)
        tried.append(cand)
        if on_result:
            on_result(cand)
    points = [p for c in tried if (p := c.point) is not None]
    note = None
    parent = next((p for p in points if p.recipe == BASELINE), None)
    if budget.min_accuracy is None and max_accuracy_drop is not None and parent is not None:
        floor = max(0.0, parent.accuracy - max_accuracy_drop)
        budget = dataclasses.replace(budget, min_accuracy=round(floor, 6))
        note = (
            f"min_accuracy derived: parent's measured accuracy {parent.accuracy:.4f} "
            f"minus {max_accuracy_drop}"
        )
    chosen, _ = choose(points, budget, objective)
    return TuneResult(
        budget=budget,
        objective=objective,
        budget_note=note,
        tried=tuple(tried),
        pareto=tuple(pareto_front(points)),
        chosen=chosen,
        closest=() if chosen else tuple(closest(points, budget)),
    )


def _check_data(onnx: Path, data: str) -> None:
    """Data the parent cannot take fails here, once, not in every recipe's worker."""
    from edgeloop.data import load_data
    from edgeloop.formats.onnx_info import check_samples_fit, inspect_onnx

    check_samples_fit(inspect_onnx(onnx), load_data(data).sample_shape, data)


def _run_one(
    recipe: Recipe,
    onnx: Path,
    checkpoint: Path | None,
    data: str,
    seed: int,
    job_dir: Path,
    runs: int,
) -> Candidate:
    job_dir.mkdir(parents=True, exist_ok=True)
    result = job_dir / "result.json"
    result.unlink(missing_ok=True)
    job = {
        "recipe": str(recipe),
        "onnx": str(onnx),
        "data": data,
        "seed": seed,
        "runs": runs,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "out_dir": str(job_dir),
        "result": str(result),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edgeloop.optimize.worker"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Candidate(str(recipe), None, f"timed out after {WORKER_TIMEOUT_S} s")
    if done.returncode != 0 or not result.exists():
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return Candidate(str(recipe), None, f"worker exited with {done.returncode}: {tail[0]}")
    body = json.loads(result.read_text())
    if "error" in body:
        return Candidate(str(recipe), None, f"{body['error']}: {body['message']}")
    return Candidate(str(recipe), body, None)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)[:60]
