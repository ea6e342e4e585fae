"""The federated models' layouts (no torch) match the torch modules the agents train, and the
ONNX file the control plane writes without torch computes what the torch module computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeloop.control.fl_export import write_onnx
from edgeloop.core.errors import NotFoundError
from edgeloop.federated.models import MODELS, fl_model
from edgeloop.federated.partition import Partition
from edgeloop.training.federated_client import get_weights
from edgeloop.training.federated_worker import build


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_layout_is_the_torch_modules(name: str) -> None:
    module = build(name)
    layout = fl_model(name).layout
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == list(
        zip(layout.names, layout.shapes, strict=True)
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_onnx_written_without_torch_matches_torch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(3)
    module = build(name).eval()
    path = tmp_path / f"{name}.onnx"
    spec_in, spec_out = write_onnx(name, get_weights(module), path)
    x = np.random.default_rng(0).random((7, *fl_model(name).input_shape), dtype=np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path)).run(None, {spec_in.name: x})[0]
    assert got.shape == (7, spec_out.shape[1])
    assert np.abs(got - expected).max() < 1e-5


def test_unknown_models_and_partitions_name_the_known_ones() -> None:
    with pytest.raises(NotFoundError, match="digits-cnn, digits-mlp"):
        fl_model("resnet")
    assert Partition.parse("dirichlet:0.5").alpha == 0.5
    with pytest.raises(Exception, match="dirichlet:ALPHA"):
        Partition.parse("dirichlet:x")


def test_partitions_cover_every_sample_once() -> None:
    y = np.repeat(np.arange(10), 30)
    for text in ("iid", "dirichlet:0.5"):
        parts = Partition.parse(text).split(y, 7, seed=1)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    assert [len(p) for p in Partition.parse("iid").split(y, 7)] == [43] * 6 + [42]
