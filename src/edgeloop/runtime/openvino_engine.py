"""OpenVINO engine for IR files (``.xml`` + ``.bin``), when the ``openvino`` package is installed.

The device comes from :attr:`SessionConfig.device` (``CPU``, ``GPU``, ``NPU``, ``AUTO``); a device
OpenVINO does not see here falls back to CPU and the reason is recorded, like ONNX Runtime's
provider chain. Each run uses a fresh infer request, so runs from several threads do not share
state (``CompiledModel.infer_new_request``).

Inference precision is pinned to f32: on CPUs with bf16 units OpenVINO otherwise computes in
bf16 by default, and a float32 model's outputs move by ~1e-3 (measured on the contract test's
model) without anyone having asked for a lower-precision variant. Lower precision is a variant
the optimizer makes and measures, not an engine default.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import (
    ConflictError,
    DataError,
    UntrustedArtifactError,
    require,
)
from edgeloop.core.types import DTYPES, TensorSpec
from edgeloop.runtime.engine import (
    Feeds,
    ModelBase,
    ModelInfo,
    Outputs,
    SessionConfig,
    check_feeds,
)

NAME = "openvino"
EXTRA = "openvino"
# Virtual devices that pick among the real ones themselves.
_META_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")


def _openvino() -> Any:
    return require("openvino", EXTRA, "running OpenVINO models")


class OpenVinoEngine:
    """Loads OpenVINO IR (``.xml``) files; ``load`` also accepts ``.onnx`` when named explicitly."""

    name: str = NAME
    suffixes: tuple[str, ...] = (".xml",)

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("openvino") is None:
            return False, f"openvino is not installed (pip install 'edgeloop[{EXTRA}]')"
        return True, "openvino is installed"

    def load(self, path: Path, config: SessionConfig) -> OpenVinoModel:
        """Read and compile ``path``; see :meth:`Engine.load` for what it raises."""
        ov = _openvino()
        core = ov.Core()
        device, fallbacks = _pick_device(config.device, list(core.available_devices))
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, device, _properties(config))
        except RuntimeError as exc:
            raise UntrustedArtifactError(
                f"OpenVINO cannot load {str(path)!r} on {device}: {exc}",
                hint="convert the model again with `ovc`, and keep the .bin beside the .xml",
            ) from exc
        info = ModelInfo(
            path=path,
            engine=NAME,
            provider=f"openvino:{device}",
            threads=config.threads,
            inputs=tuple(_spec(path, p, _name(p, model.inputs)) for p in compiled.inputs),
            outputs=tuple(_spec(path, p, _name(p, model.outputs)) for p in compiled.outputs),
            fallbacks=fallbacks,
            config=config,
        )
        return OpenVinoModel(
            compiled, info, {s.name: p for s, p in zip(info.outputs, compiled.outputs, strict=True)}
        )


def _properties(config: SessionConfig) -> dict[str, Any]:
    return {"INFERENCE_NUM_THREADS": config.threads, "INFERENCE_PRECISION_HINT": "f32"}


def _pick_device(wanted: str, available: list[str]) -> tuple[str, tuple[str, ...]]:
    """``wanted`` if OpenVINO sees it (or it is a meta device), else CPU with the reason (pure)."""
    if wanted.split(":")[0] in _META_DEVICES or wanted in available:
        return wanted, ()
    return "CPU", (f"{wanted}: not among OpenVINO devices ({', '.join(available)})",)


def _name(port: Any, source_ports: Any) -> str:
    """The tensor's name as the model file gives it.

    Compiling may give a port extra names (an FP16 model's input Cast folded into it brings
    ``graph_input_cast_0``) and ``get_any_name`` then picks any of them; the name the file's
    own port carries is the one clients send and expect back.
    """
    names = set(port.get_names())
    for source in source_ports:
        if names & set(source.get_names()):
            return str(source.get_any_name())
    return str(port.get_any_name())


def _spec(path: Path, port: Any, name: str) -> TensorSpec:
    dtype = np.dtype(port.get_element_type().to_dtype()).name
    if dtype not in DTYPES:
        raise UntrustedArtifactError(
            f"{str(path)!r}: tensor {name!r} has dtype {dtype}; servable dtypes are "
            + ", ".join(DTYPES)
        )
    shape = tuple(None if d.is_dynamic else int(d.get_length()) for d in port.get_partial_shape())
    return TensorSpec(name, shape, dtype)


class OpenVinoModel(ModelBase):
    """A compiled OpenVINO model; every run gets its own infer request."""

    __slots__ = ("_compiled", "_outputs")

    def __init__(self, compiled: Any, info: ModelInfo, outputs: dict[str, Any]) -> None:
        super().__init__(info)
        self._compiled: Any = compiled
        self._outputs = outputs  # output name as the file gives it -> compiled port

    def run(self, feeds: Feeds) -> Outputs:
        """Run one infer request on ``feeds``; see :meth:`LoadedModel.run`."""
        compiled = self._compiled
        if compiled is None:
            raise ConflictError(
                f"model {self.path.name!r} was closed (unloaded)",
                hint="acquire the model again from its pool",
            )
        check_feeds(self.path.name, self.inputs, feeds)
        try:
            result = compiled.infer_new_request(dict(feeds))
        except RuntimeError as exc:
            raise DataError(f"model {self.path.name!r} failed on this input: {exc}") from exc
        return {name: np.asarray(result[port]) for name, port in self._outputs.items()}

    def close(self) -> None:
        self._compiled = None
