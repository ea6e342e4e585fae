"""The optimize stage: search optimization recipes, plot the Pareto set, register the choice.

Each recipe runs in its own process (:func:`edgeloop.optimize.tune.tune`), measured on the same
held-out split as the parent. The chosen variant (the fastest that keeps the accuracy bar) is
published with the parent as its lineage parent and copied beside the parent as
``NAME-edge.onnx``, the file the serve and fleet stages use.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.optimize.pareto import Point
from edgeloop.optimize.tune import Candidate, TuneResult

if TYPE_CHECKING:
    from edgeloop.data.dataset import Dataset


@dataclass(frozen=True, slots=True)
class Edge:
    """The chosen variant: its registry ref, manifest, and its file beside the parent."""

    ref: ModelRef
    manifest: Manifest
    file: Path


@dataclass(frozen=True, slots=True)
class Optimized:
    """Every recipe tried (measured, or why it failed), the Pareto set, and the choice."""

    tuned: TuneResult
    edge: Edge | None

    def to_dict(self) -> dict[str, Any]:
        tune = self.tuned.to_dict()
        return {
            "variants": [dict(row) for row in tune["tried"]],
            "pareto": tune["pareto"],
            "chosen": tune["chosen"],
            "tune": {k: tune[k] for k in ("objective", "budget", "budget_note", "closest")},
            "registry": {"edge_ref": None if self.edge is None else str(self.edge.ref)},
        }


@dataclass(frozen=True, slots=True)
class Parent:
    """The model the variants derive from, as the optimize stage needs to know it;
    ``reference`` (its training split) profiles the chosen variant for the drift monitor, its
    outputs on ``held_out`` (the validation split) when given."""

    onnx: Path
    ref: ModelRef | None
    data: str
    data_hash: str | None
    checkpoint: Path | None
    reference: Dataset | None = None
    held_out: Dataset | None = None


def optimize(
    parent: Parent,
    recipes: Sequence[str],
    out_dir: Path,
    settings: Settings,
    *,
    edge_name: str,
    seed: int,
    runs: int,
    on_result: Callable[[Candidate], None] | None = None,
) -> Optimized:
    """Try ``recipes`` (the FP32 parent always measured too) under the default budget.

    Writes the variants under ``out_dir/variants``, ``out_dir/pareto.png`` and, when one was
    chosen, ``out_dir/EDGE_NAME.onnx``; publishes the choice as ``edge_name``.

    Raises:
        ConfigError: a recipe that does not parse, or torch recipes without a checkpoint.
    """
    from edgeloop.optimize.pareto import Budget
    from edgeloop.optimize.plot import plot_pareto
    from edgeloop.optimize.tune import tune

    tuned = tune(
        parent.onnx,
        parent.data,
        Budget(),
        out_dir / "variants",
        recipes=["fp32", *recipes],
        checkpoint=parent.checkpoint,
        seed=seed,
        runs=runs,
        on_result=on_result,
    )
    edge = None
    if tuned.chosen is not None:
        edge = _publish(tuned, tuned.chosen, parent, edge_name, out_dir, seed, settings)
    points = [p for c in tuned.tried if (p := c.point) is not None]
    plot_pareto(points, tuned.pareto, tuned.chosen, out_dir / "pareto.png")
    return Optimized(tuned, edge)


def _publish(
    tuned: TuneResult,
    chosen: Point,
    parent: Parent,
    name: str,
    out_dir: Path,
    seed: int,
    settings: Settings,
) -> Edge:
    from edgeloop.optimize.tune import chosen_manifest
    from edgeloop.pipeline.register import register

    manifest = chosen_manifest(
        tuned,
        name,
        parent=parent.ref,
        parent_file=parent.onnx,
        dataset=parent.data,
        data_hash=parent.data_hash,
        seed=seed,
    )
    source = Path(tuned.row(chosen.recipe)["output"])
    registered = register(
        source, manifest, settings, reference=parent.reference, held_out=parent.held_out
    )
    edge_file = out_dir / f"{name}.onnx"
    shutil.copyfile(source, edge_file)
    return Edge(registered.ref, registered.manifest, edge_file)
