"""Rebuilding an edge variant from a changed parent: which recipes can be redone from an FP32
ONNX export and a few local samples alone, and the redo.

A node that serves an INT8 variant (the optimize stage's ``digits-cnn-edge:1``, child of the
FP32 ``digits-cnn:1`` that has the torch checkpoint) fine-tunes the parent's weights, exports
FP32 ONNX and applies the variant's recipe again (control/train_api.py asks for it,
training/on_device_rebuild.py does it). That works for post-training quantization with ONNX
Runtime, which needs nothing but the FP32 file and calibration samples; a recipe with a
torch-side step (pruning with fine-tuning, QAT, distillation) needs the training data set and
the optimize worker, and a TFLite or other format needs its converter: those are refused.

Torch-free: the control plane imports :func:`rebuild_plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Dataset, Splits
from edgeloop.optimize.base import ModelSource, Variant
from edgeloop.optimize.recipe import Recipe, run_recipe

# Post-training quantization with ONNX Runtime: the FP32 export and calibration samples are
# all it needs (optimize/quantize.py).
REBUILDABLE = ("static-int8", "dynamic-int8")
_WORKS = (
    f"a variant made by {' or '.join(REBUILDABLE)} alone, or the parent itself "
    "(`edgeloop fleet train NODE PARENT:V` after deploying the parent); for this recipe, "
    "retrain in the control plane (`edgeloop retrain`), which rebuilds the variant there"
)


def rebuild_plan(recipe: Mapping[str, Any] | None, fmt: str, ref: str) -> Recipe:
    """The recipe that made variant ``ref`` when a node can redo it from the parent's FP32
    export (its manifest's ``recipe`` block and ``format``).

    Raises:
        ConfigError: another format, no recorded recipe, or a step outside REBUILDABLE; the
            message names the recipe and what would work.
    """
    if fmt != "onnx":
        raise ConfigError(
            f"model {ref} is a {fmt} file; a node rebuilds only ONNX variants from their "
            "parent's checkpoint",
            hint=_WORKS,
        )
    text = (recipe or {}).get("recipe")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f"model {ref} records no optimization recipe (manifest recipe.recipe), so a node "
            "cannot know how to rebuild it from its parent's checkpoint",
            hint="publish the variant with the optimize stage's manifest, or " + _WORKS,
        )
    plan = Recipe.parse(text)
    if not plan.steps:
        raise ConfigError(
            f"model {ref} was made by recipe {text!r}: it is its parent's FP32 file, not a "
            "variant a node rebuilds",
            hint=_WORKS,
        )
    other = [s.method for s in plan.steps if s.method not in REBUILDABLE]
    if other:
        raise ConfigError(
            f"model {ref} was made by recipe {text!r}, whose step(s) {', '.join(other)} a node "
            f"cannot redo (it redoes post-training quantization: {', '.join(REBUILDABLE)})",
            hint=_WORKS,
        )
    return plan


def rebuild(
    plan: Recipe, fp32: Path, calibration: Dataset, check: Dataset, work: Path
) -> list[Variant]:
    """Apply ``plan`` to the FP32 file ``fp32``: calibrated on ``calibration`` (the node's
    training-side samples), parity measured on ``check`` (never fitted on). Every step's
    Variant; the last one's ``path`` (under ``work``) is the rebuilt model.

    Raises:
        ConfigError: a step outside REBUILDABLE. What the steps raise (ConversionError, ...).
    """
    other = [s.method for s in plan.steps if s.method not in REBUILDABLE]
    if other:
        raise ConfigError(f"recipe {plan} has steps a node cannot redo: {', '.join(other)}")
    if not plan.steps:
        raise ConfigError("recipe fp32 changes nothing; there is nothing to rebuild")
    splits = Splits(calibration, calibration, check, seed=0)
    return run_recipe(plan, ModelSource(fp32, None, fp32.stem), splits, work)
