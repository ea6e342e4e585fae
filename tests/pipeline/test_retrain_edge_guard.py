"""The retraining job judges the edge variant it rebuilt by its own rule: against the champion's
edge variant (what the fleet serves) on the parent's original test split, with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
from tests.tiny_models import make_linear_onnx

from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef, TensorSpec
from edgeloop.data.dataset import Dataset, Modality
from edgeloop.pipeline.retrain import _edge_against_champion
from edgeloop.pipeline.retrain_register import EdgeRecipe
from edgeloop.registry import Registry


def test_the_rebuilt_edge_variant_is_scored_against_the_served_one(
    tmp_path: Path, home: Path
) -> None:
    served = make_linear_onnx(tmp_path / "served.onnx", seed=1)
    other = make_linear_onnx(tmp_path / "other.onnx", seed=2)
    manifest = Manifest("m-edge", "onnx", (TensorSpec("input", (None, 4), "float32"),),
                        (TensorSpec("output", (None, 3), "float32"),))  # fmt: skip
    settings = Settings.load(home)
    with Registry.open(settings) as registry:
        ref = registry.publish(served, manifest).ref
    x = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    session = ort.InferenceSession(str(served), providers=["CPUExecutionProvider"])
    y = np.asarray(session.run(None, {"input": x})[0]).argmax(axis=1).astype(np.int64)
    test = Dataset("original test", x, y, ("a", "b", "c"), Modality.TABULAR)
    run = SimpleNamespace(settings=settings)
    edge = EdgeRecipe("m-edge", "static-int8", ModelRef.parse(str(ref)))

    same, drop = _edge_against_champion(run, edge, served, test)  # type: ignore[arg-type]
    assert drop == 0 and same["drop_pp"] == 0 and same["champion_edge"]["accuracy"] == 1.0
    worse, drop = _edge_against_champion(run, edge, other, test)  # type: ignore[arg-type]
    agree = worse["rebuilt_edge"]["correct"]
    assert agree < 200 and drop == (200 - agree) / 200  # labels are the served model's answers
    assert worse["drop_pp"] == round(drop * 100, 2) and worse["rebuilt_edge"]["samples"] == 200
