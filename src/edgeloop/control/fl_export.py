"""A federated task's final model as an ONNX file, written by the control plane without torch.

The federated models are a closed list (:mod:`edgeloop.federated.models`), so each one's ONNX
graph is written here from its flat weights with ``onnx.helper``: torch's ``Conv2d`` weight is
ONNX ``Conv``'s (out, in, kH, kW); ``Flatten`` keeps the batch axis and flattens the rest in C
order, as ONNX ``Flatten(axis=1)``; ``Linear`` is ``Gemm`` with ``transB=1`` (y = x W^T + b).
A test compares ONNX Runtime's outputs on these files with the torch modules of
:mod:`edgeloop.training.federated_worker` on the same weights. Exporting through torch instead
took 33 s on this shared machine, most of it torch's import and its dynamo exporter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import TensorSpec
from edgeloop.federated.models import fl_model
from edgeloop.federated.update import Vector

OPSET = 18


def _nodes(name: str) -> list[onnx.NodeProto]:
    def conv(inputs: list[str], out: str) -> onnx.NodeProto:  # Conv2d(k=3, stride 1, no pad)
        return helper.make_node("Conv", inputs, [out], kernel_shape=[3, 3], pads=[0, 0, 0, 0])

    if name == "digits-cnn":
        return [
            conv(["input", "0.weight", "0.bias"], "c1"),
            helper.make_node("Relu", ["c1"], ["r1"]),
            conv(["r1", "2.weight", "2.bias"], "c2"),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("Flatten", ["r2"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "5.weight", "5.bias"], ["output"], transB=1),
        ]
    if name == "digits-mlp":
        return [
            helper.make_node("Flatten", ["input"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "1.weight", "1.bias"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "3.weight", "3.bias"], ["output"], transB=1),
        ]
    raise ConfigError(f"no ONNX graph is written for federated model {name!r}")


def write_onnx(name: str, weights: Vector, path: Path) -> tuple[TensorSpec, TensorSpec]:
    """Write model ``name`` with ``weights`` (its flat layout) to ``path``; its input and
    output specs (batch axis free).

    Raises:
        NotFoundError: unknown model. DataError: weights of another size.
    """
    model = fl_model(name)
    arrays = model.layout.unflatten(weights)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    shape = [None, *model.input_shape]
    graph = helper.make_graph(
        _nodes(name),
        f"edgeloop-fl-{name}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, model.classes])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return (
        TensorSpec("input", (None, *model.input_shape), "float32"),
        TensorSpec("output", (None, model.classes), "float32"),
    )
