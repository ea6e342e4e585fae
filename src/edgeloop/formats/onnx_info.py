"""Safe loading of ONNX files that come from users.

A model file is untrusted input. Before anything runs it we check, without executing it:

- its size (and that of its external data) is under a limit, so a huge file cannot exhaust memory;
- every external-data path stays inside the model's folder (no ``../../etc/passwd``, no absolute
  paths, no symlinks that lead out), the attack ONNX's own checker guards against since 1.16;
- the graph passes ``onnx.checker``;
- every declared input is a tensor of an element type we can feed, so a server can serve it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError
from edgeloop.core.types import TensorSpec, shape_str

DEFAULT_MAX_BYTES = 2 * 1024**3  # protobuf's own hard limit for one file

_SERVABLE: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.BOOL: "bool",
}


@dataclass(frozen=True, slots=True)
class OnnxModelInfo:
    """What an ONNX file declares, read without running it."""

    path: Path
    size_bytes: int
    external_bytes: int
    opset: int
    ir_version: int
    producer: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "external_bytes": self.external_bytes,
            "opset": self.opset,
            "ir_version": self.ir_version,
            "producer": self.producer,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def inspect_onnx(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> OnnxModelInfo:
    """Check an ONNX file as described in the module docstring and return what it declares.

    Raises:
        NotFoundError: the file does not exist.
        UntrustedArtifactError: too large, not ONNX, external data outside its folder, an
            invalid graph, or an input no server can feed.
    """
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"model file {str(file)!r} does not exist", hint="check the path")
    size = file.stat().st_size
    _check_size(file, size, max_bytes)
    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ...; all mean the same
        raise UntrustedArtifactError(
            f"{str(file)!r} is not a readable ONNX model ({type(exc).__name__}: {exc})",
            hint="export the model again with `edgeloop export`, or check the file is complete",
        ) from exc
    external = _check_external_data(file, model, max_bytes - size)
    try:
        # By path, so the checker resolves external data against the model's own folder.
        onnx.checker.check_model(str(file))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UntrustedArtifactError(
            f"{str(file)!r} is not a valid ONNX graph: {first}",
            hint="re-export the model with a supported opset (17-21)",
        ) from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(file, v) for v in model.graph.input if v.name not in initializers)
    if not inputs:
        raise UntrustedArtifactError(f"{str(file)!r} declares no inputs; there is nothing to feed")
    return OnnxModelInfo(
        path=file,
        size_bytes=size,
        external_bytes=external,
        opset=_default_opset(model),
        ir_version=int(model.ir_version),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=inputs,
        outputs=tuple(_spec(file, v) for v in model.graph.output),
    )


def _check_size(file: Path, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise UntrustedArtifactError(
            f"{str(file)!r} is {size} bytes, above the limit of {max_bytes} bytes",
            hint="raise the limit (--max-model-mb) if you trust this file",
        )


def _check_external_data(file: Path, model: onnx.ModelProto, budget: int) -> int:
    """Return the external data's total size after checking every location stays in the folder."""
    folder = file.parent.resolve()
    total = 0
    seen: set[Path] = set()
    for tensor in _all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise UntrustedArtifactError(
                f"{str(file)!r}: tensor {tensor.name!r} points its external data at "
                f"{location!r}, outside the model's folder {str(folder)!r}",
                hint="only load models whose external data files sit beside the .onnx file",
            )
        if not target.is_file():
            raise UntrustedArtifactError(
                f"{str(file)!r}: external data file {location!r} "
                f"for tensor {tensor.name!r} is missing",
                hint="copy the .onnx file together with its .data file",
            )
        if target not in seen:
            seen.add(target)
            total += target.stat().st_size
    if total > budget:
        raise UntrustedArtifactError(
            f"{str(file)!r}: external data is {total} bytes, above the remaining limit of {budget}"
        )
    return total


def _all_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                tensors.append(attr.t)
    return tensors


def _spec(file: Path, value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise UntrustedArtifactError(
            f"{str(file)!r}: {value.name!r} is a {kind}, not a tensor; it cannot be served",
            hint="export the model with plain tensor inputs and outputs",
        )
    elem = value.type.tensor_type.elem_type
    if elem not in _SERVABLE:
        name = TensorProto.DataType.Name(elem)
        raise UntrustedArtifactError(
            f"{str(file)!r}: {value.name!r} has element type {name}; servable types are "
            + ", ".join(sorted(_SERVABLE.values())),
        )
    dims: list[int | None] = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
    return TensorSpec(value.name, tuple(dims), _SERVABLE[elem])


def _default_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_samples_fit(
    info: OnnxModelInfo, sample_shape: tuple[int, ...], data_name: str, *, flag: str = "--data"
) -> None:
    """Refuse data whose samples do not fit the model's one input (batch axis first).

    A model made elsewhere (a 1x3x32x32 CNN, say) fed a bundled set of 1x8x8 images would fail
    deep inside an engine with an INVALID_ARGUMENT; this says which shape the data needs.

    Raises:
        ConfigError: the model has several inputs, or the shapes differ; naming both shapes.
    """
    if len(info.inputs) != 1:
        raise ConfigError(
            f"model {info.path.name} has {len(info.inputs)} inputs "
            f"({', '.join(s.name for s in info.inputs)}); {flag} feeds exactly one",
            hint="give a model with a single input",
        )
    spec = info.inputs[0]
    expected = spec.shape[1:]
    fits = len(expected) == len(sample_shape) and all(
        e is None or e == g for e, g in zip(expected, sample_shape, strict=True)
    )
    if not fits:
        raise ConfigError(
            f"data set {data_name!r} has samples of shape {shape_str(sample_shape)}, but model "
            f"{info.path.name} input {spec.name!r} takes {shape_str(spec.shape)} (batch first)",
            hint=f"pass {flag} with samples of shape {shape_str(expected)}: a CSV, NPZ (x, y), "
            "image folder or JSONL file (`edgeloop data show PATH` shows a set's shape)",
        )
