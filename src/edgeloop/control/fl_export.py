"""A federated task's model in and out of the control plane, which never imports torch.

In: the seeded initial model, made by ``edgeloop.training.federated_worker init`` run as a
process. Out: the final model as an ONNX file written here (below), published in the registry
with the task as its lineage (:func:`publish`).

The federated models are a closed list (:mod:`edgeloop.federated.models`), so each one's ONNX
graph is written here from its flat weights with ``onnx.helper``: torch's ``Conv2d`` weight is
ONNX ``Conv``'s (out, in, kH, kW); ``Flatten`` keeps the batch axis and flattens the rest in C
order, as ONNX ``Flatten(axis=1)``; ``Linear`` is ``Gemm`` with ``transB=1`` (y = x W^T + b).
A test compares ONNX Runtime's outputs on these files with the torch modules of
:mod:`edgeloop.training.federated_worker` on the same weights. Exporting through torch instead
took 33 s on this shared machine, most of it torch's import and its dynamo exporter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeloop.control import fl_store
from edgeloop.control.fl_store import TaskSpec
from edgeloop.core.errors import ConfigError
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.federated.models import fl_model
from edgeloop.federated.update import Vector, as_vector
from edgeloop.registry.registry import Registry

OPSET = 18
INIT_TIMEOUT_S = 300.0


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


def worker(args: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``edgeloop.training.federated_worker ARGS``; its JSON line. Raises ConfigError."""
    cmd = [sys.executable, "-m", "edgeloop.training.federated_worker", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"the federated worker ({' '.join(args[:1])}) failed: {exc}") from exc
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        answer = {"message": done.stderr.decode(errors="replace").strip()[-400:]}
    if done.returncode != 0 or "error" in answer or "message" in answer:
        raise ConfigError(
            f"the federated worker ({args[0]}) failed: {answer.get('message')}",
            hint="it needs torch where the control plane runs (pip install 'edgeloop[train]')",
        )
    return answer


def initial_weights(spec: TaskSpec) -> Vector:
    """The seeded initial model, made by the worker process (torch.manual_seed(spec.seed))."""
    with tempfile.TemporaryDirectory(prefix="edgeloop-fl-") as tmp:
        out = Path(tmp) / "init.npy"
        worker(["init", "--model", spec.model, "--seed", str(spec.seed), "--out", str(out)],
                INIT_TIMEOUT_S)  # fmt: skip
        return as_vector(np.load(out))


def publish(registry: Registry, status: dict[str, Any]) -> dict[str, Any]:
    """Write the task's final model as ONNX and publish it; the registration record."""
    spec = TaskSpec.from_dict(status["spec"])
    done = [h for h in status["history"] if h.get("participants")]
    final = next((h for h in reversed(status["history"]) if h.get("accuracy") is not None), None)
    with tempfile.TemporaryDirectory(prefix="edgeloop-fl-") as tmp:
        onnx = Path(tmp) / f"{spec.name}.onnx"
        spec_in, spec_out = write_onnx(spec.model, fl_store.as_float64(status["weights"]), onnx)
        manifest = Manifest(
            name=spec.name, format="onnx", inputs=(spec_in,), outputs=(spec_out,),
            recipe={"federated": {
                "task_id": status["task_id"], "model": spec.model, "strategy": spec.strategy,
                "rounds": len(done), "participants": sorted({n for h in done
                                                             for n in h["participants"]}),
                "epsilon": status["epsilon"], "delta": spec.dp.delta if spec.dp else None,
                "spec": status["spec"]}},
            metrics={} if final is None else {"federated_accuracy": float(final["accuracy"])},
            labels=("federated",),
        )  # fmt: skip
        version = registry.publish(onnx, manifest)
    return {"state": "registered", "ref": str(version.ref), "lineage": {
        "federated_task": status["task_id"], "rounds": len(done)}}  # fmt: skip
