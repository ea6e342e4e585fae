"""Post-training quantization with ONNX Runtime's tooling: static INT8, dynamic INT8, FP16.

- ``static-int8`` fixes every activation's scale from calibration samples of the train split
  (min-max, entropy or percentile) and writes QDQ (QuantizeLinear/DequantizeLinear pairs that
  ONNX Runtime fuses into integer kernels) or QOperator (QLinearConv, ...) format.
- ``dynamic-int8`` stores INT8 weights and quantizes activations at run time, batch by batch:
  no calibration, made for MatMul-heavy models. On convolutions it produces ConvInteger, which
  measured 8x *slower* than FP32 on a small conv net on this CPU, so it leaves Conv alone unless
  asked (``op_types``) and :mod:`edgeloop.optimize.presets` picks static INT8 for conv nets.
- ``fp16`` halves the weights' bytes; ONNX Runtime's CPU provider computes most FP16 ops by
  casting back to FP32, so it is a size step, not a CPU speed step.

Quantized files drop the exporter's per-node debug metadata (stack traces), which nothing
reads at run time. Every variant records its census (:func:`edgeloop.optimize.graph.census`:
which compute nodes run on integers, which stayed float), both file sizes and parity with the
parent.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import onnx

from edgeloop.core.errors import ConfigError, ConversionError
from edgeloop.data.dataset import Splits
from edgeloop.optimize.base import ModelSource, OptimizerBase, Variant, register
from edgeloop.optimize.calibration import calibration_samples, describe, reader_for
from edgeloop.optimize.graph import (
    FLOAT_COMPUTE,
    OpCensus,
    census,
    gemm_to_matmul,
    parse_choice,
    strip_debug_info,
)

# Where a method fails, the error names those that would work.
ALTERNATIVES = "static-int8 (conv nets), dynamic-int8 (MatMul-heavy nets), fp16, graph-opt"


class QuantFormat(StrEnum):
    QDQ = "qdq"
    QOPERATOR = "qoperator"


class Calibration(StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class IntType(StrEnum):
    INT8 = "int8"
    UINT8 = "uint8"


# ONNX Runtime quantize_static extra_options that change the QDQ graph (all true/false), and
# what each does; the INT8 benchmark measured each on EfficientNet-Lite0 (docs/benchmarks.md).
QDQ_OPTIONS = {
    "QDQKeepRemovableActivations": "keep Relu/Clip after quantized nodes instead of folding them",
    "DedicatedQDQPair": "one QDQ pair per consumer of a tensor instead of a shared one",
    "AddQDQPairToWeight": "float weights with a Q/DQ pair instead of stored INT8 weights",
    "WeightSymmetric": "symmetric weights (zero point 0); false gives asymmetric weights",
    "ForceQuantizeNoInputCheck": "quantize ops like Reshape/ReduceMean even if their input is not",
    "MatMulConstBOnly": "quantize only MatMuls whose second input is a constant",
}

# Operators dynamic quantization may touch; Gemm is first rewritten to MatMul + Add.
DYNAMIC_OPS = ("MatMul", "Gemm", "Conv", "Attention", "LSTM", "Gather")


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} {value!r} is not valid; expected true or false")
    return value


def _tools() -> dict[str, str]:
    import onnxruntime as ort

    return {"onnxruntime": str(ort.__version__), "onnx": onnx.__version__}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Quantizer(OptimizerBase):
    """Plumbing shared by the quantizers: the fitted check, atomic output, the Variant."""

    def _check_fitted(self, attribute: str = "parity_x_") -> None:
        if not hasattr(self, attribute):
            raise ConfigError(
                f"method {self.name!r} was not fitted: call fit(splits) before apply()",
                hint="on the command line, pass --data",
            )

    def _check_handles(self, source: Path, parent: OpCensus, ops: Iterable[str]) -> None:
        wanted = tuple(ops)
        if parent.count(*wanted) == 0:
            present = ", ".join(sorted(parent.ops)) or "none"
            raise ConversionError(
                f"method {self.name!r} quantizes {', '.join(wanted)} operators; model "
                f"{source.name} has none (its operators: {present})",
                hint=f"methods that would work here: {ALTERNATIVES}",
            )

    def _preprocessed(self, model: Path, work: Path, enabled: bool) -> Path:
        """ORT's pre-processing: symbolic shape inference, then BatchNorm folding and other
        basic graph optimizations, so the quantizer sees the graph ORT will run."""
        if not enabled:
            return model
        from onnxruntime.quantization.shape_inference import quant_pre_process

        target = work / f"preprocessed-{model.name}"
        try:
            quant_pre_process(str(model), str(target))
        except Exception as exc:  # symbolic shape inference raises many kinds
            raise ConversionError(
                f"ONNX Runtime's quantization pre-processing failed on {model.name}: "
                f"{_first_line(exc)}",
                hint="retry with preprocess=False",
            ) from exc
        return target

    def _variant(
        self,
        source: ModelSource,
        out: Path,
        notes: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
        quantized: bool = True,
    ) -> Variant:
        parent, child = census(source.onnx), census(out)
        if quantized and child.int_compute == 0:
            out.unlink(missing_ok=True)
            raise ConversionError(
                f"method {self.name!r} quantized no compute operator of {source.onnx.name} "
                f"(float compute nodes: {child.float_compute})",
                hint=f"methods that would work here: {ALTERNATIVES}",
            )
        left = child.float_compute_nodes
        if left and quantized:
            shown = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
            notes = (*notes, f"{len(left)} compute nodes stayed in float: {shown}")
        parent_bytes, child_bytes = source.onnx.stat().st_size, out.stat().st_size
        return Variant(
            method=self.name,
            path=out,
            settings={**self.get_params(), **(settings or {})},
            tools=_tools(),
            parity=self.measure_parity(source.onnx, out),
            parent=source.onnx,
            checkpoint=source.checkpoint,
            notes=tuple(notes),
            extra={
                "size_bytes": child_bytes,
                "parent_size_bytes": parent_bytes,
                "size_ratio": parent_bytes / child_bytes,
                "census": child.to_dict(),
                "parent_census": parent.to_dict(),
            },
        )


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def _strip(path: Path) -> None:
    model = onnx.load(str(path))
    if strip_debug_info(model):
        onnx.save(model, str(path))


@register("static-int8")
class StaticInt8(_Quantizer):
    """Static INT8 from calibration samples of the train split.

    Parameters: ``format`` (qdq | qoperator), ``per_channel`` weight scales, ``calibration``
    (minmax | entropy | percentile), ``activations`` / ``weights`` (uint8 | int8),
    ``reduce_range`` (7-bit weights, for x86 CPUs without VNNI), ``symmetric_activations``,
    ``samples`` (calibration sample count), ``preprocess`` (ORT's shape inference and
    BatchNorm folding before quantizing), ``float_ops`` (operator types left in float, e.g.
    ``("Gemm",)`` to keep a classifier head whose INT8 kernel is slow on some engine),
    ``float_depthwise`` (leave grouped convolutions in float: an engine may run them in bf16),
    ``qdq_options`` (ONNX Runtime's graph-shaping ``extra_options``, keys of ``QDQ_OPTIONS``).
    """

    name = "static-int8"
    needs_data = True

    def __init__(
        self,
        *,
        format: str = "qdq",
        per_channel: bool = True,
        calibration: str = "minmax",
        activations: str = "uint8",
        weights: str = "int8",
        reduce_range: bool = False,
        symmetric_activations: bool = False,
        samples: int = 256,
        preprocess: bool = True,
        float_ops: Sequence[str] = (),
        float_depthwise: bool = False,
        qdq_options: Mapping[str, bool] | None = None,
    ) -> None:
        self.format = parse_choice(QuantFormat, format, "format")
        self.per_channel = _flag(per_channel, "per_channel")
        self.calibration = parse_choice(Calibration, calibration, "calibration")
        self.activations = parse_choice(IntType, activations, "activations")
        self.weights = parse_choice(IntType, weights, "weights")
        self.reduce_range = _flag(reduce_range, "reduce_range")
        self.symmetric_activations = _flag(symmetric_activations, "symmetric_activations")
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 100_000:
            raise ConfigError(f"samples {samples!r} is out of range; expected an int 1..100000")
        self.samples = samples
        self.preprocess = _flag(preprocess, "preprocess")
        ops = (float_ops,) if isinstance(float_ops, str) else tuple(float_ops)
        if not all(isinstance(op, str) and op.isidentifier() for op in ops):
            raise ConfigError(
                f"float_ops {list(ops)!r} must be ONNX operator type names, e.g. ('Gemm',)"
            )
        self.float_ops = ops
        self.float_depthwise = _flag(float_depthwise, "float_depthwise")
        self.qdq_options = _qdq_options(qdq_options or {})

    def fit(self, data: Splits) -> Self:
        """Keep calibration samples (train split) and parity samples (test split)."""
        super().fit(data)
        self.calibration_x_ = calibration_samples(data.train, self.samples)
        self.calibration_split_ = f"{data.train.name} train"
        return self

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Quantize ``source.onnx`` into ``out``.

        Raises:
            ConfigError: not fitted; a model with several or non-float inputs.
            DataError: calibration samples whose shape does not fit the model (both named).
            ConversionError: nothing to quantize, or ONNX Runtime's quantizer failed.
        """
        self._check_fitted("calibration_x_")
        reader = reader_for(source.onnx, self.calibration_x_)
        self._check_handles(source.onnx, census(source.onnx), FLOAT_COMPUTE)
        tmp = _atomic_target(out)
        try:
            with tempfile.TemporaryDirectory(prefix="edgeloop-quant-") as work:
                model = self._preprocessed(source.onnx, Path(work), self.preprocess)
                self._quantize(model, tmp, reader)
            _strip(tmp)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
        calibration = describe(reader, self.calibration_split_)
        return self._variant(source, out, settings={"calibration_data": calibration})

    def _quantize(self, model: Path, target: Path, reader: Any) -> None:
        from onnxruntime import quantization as q

        methods = {
            Calibration.MINMAX: q.CalibrationMethod.MinMax,
            Calibration.ENTROPY: q.CalibrationMethod.Entropy,
            Calibration.PERCENTILE: q.CalibrationMethod.Percentile,
        }
        types = {IntType.INT8: q.QuantType.QInt8, IntType.UINT8: q.QuantType.QUInt8}
        graph = onnx.load(str(model), load_external_data=False).graph
        excluded = [
            n.name
            for n in graph.node
            if n.op_type in self.float_ops or (self.float_depthwise and _grouped_conv(n))
        ]
        try:
            q.quantize_static(
                str(model),
                str(target),
                reader,
                quant_format=(
                    q.QuantFormat.QDQ if self.format is QuantFormat.QDQ else q.QuantFormat.QOperator
                ),
                per_channel=self.per_channel,
                reduce_range=self.reduce_range,
                activation_type=types[self.activations],
                weight_type=types[self.weights],
                calibrate_method=methods[self.calibration],
                nodes_to_exclude=excluded,
                extra_options={
                    "ActivationSymmetric": self.symmetric_activations,
                    **self.qdq_options,
                },
            )
        except Exception as exc:  # ORT raises ValueError, RuntimeError, its own classes
            raise ConversionError(
                f"ONNX Runtime's static quantizer failed on {model.name}: {_first_line(exc)}",
                hint=f"try format=qdq, preprocess=True, or another method: {ALTERNATIVES}",
            ) from exc


def _qdq_options(options: Mapping[str, bool]) -> dict[str, bool]:
    bad = [k for k in options if k not in QDQ_OPTIONS]
    if bad:
        raise ConfigError(
            f"qdq_options {sorted(bad)} are not known; expected some of {', '.join(QDQ_OPTIONS)}",
            hint="symmetric activations are the parameter symmetric_activations",
        )
    for key, value in options.items():
        _flag(value, f"qdq_options[{key!r}]")
    return dict(options)


def _grouped_conv(node: onnx.NodeProto) -> bool:
    """A Conv with group > 1: depthwise (or grouped) convolution."""
    groups = [a.i for a in node.attribute if a.name == "group"]
    return node.op_type == "Conv" and bool(groups) and groups[0] > 1


@register("dynamic-int8")
class DynamicInt8(_Quantizer):
    """INT8 weights, activations quantized at run time; for MatMul-heavy models.

    ``op_types`` says what to quantize (default MatMul, Gemm, Attention, LSTM); add ``Conv``
    only knowingly -- ConvInteger is slower than FP32 convolution on x86 CPUs.
    """

    name = "dynamic-int8"

    def __init__(
        self,
        *,
        weights: str = "int8",
        per_channel: bool = False,
        reduce_range: bool = False,
        op_types: Sequence[str] = ("MatMul", "Gemm", "Attention", "LSTM"),
        preprocess: bool = True,
    ) -> None:
        self.weights = parse_choice(IntType, weights, "weights")
        self.per_channel = _flag(per_channel, "per_channel")
        self.reduce_range = _flag(reduce_range, "reduce_range")
        ops = (op_types,) if isinstance(op_types, str) else tuple(op_types)
        bad = [op for op in ops if op not in DYNAMIC_OPS]
        if bad or not ops:
            raise ConfigError(
                f"op_types {list(ops)!r} are not valid: {bad or 'empty'}; expected some of "
                f"{', '.join(DYNAMIC_OPS)}",
                hint="the default (MatMul, Gemm, Attention, LSTM) suits MatMul-heavy models",
            )
        self.op_types = ops
        self.preprocess = _flag(preprocess, "preprocess")

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Quantize ``source.onnx``'s weights into ``out``.

        Raises:
            ConfigError: not fitted.
            ConversionError: none of ``op_types`` in the model, or the quantizer failed.
        """
        from onnxruntime import quantization as q

        self._check_fitted()
        self._check_handles(source.onnx, census(source.onnx), self.op_types)
        tmp = _atomic_target(out)
        try:
            with tempfile.TemporaryDirectory(prefix="edgeloop-quant-") as work:
                model, rewritten = self._matmul_form(source.onnx, Path(work))
                model = self._preprocessed(model, Path(work), self.preprocess)
                q.quantize_dynamic(
                    str(model),
                    str(tmp),
                    op_types_to_quantize=self._ort_op_types(),
                    per_channel=self.per_channel,
                    reduce_range=self.reduce_range,
                    weight_type=q.QuantType.QInt8
                    if self.weights is IntType.INT8
                    else q.QuantType.QUInt8,
                )
            _strip(tmp)
            tmp.replace(out)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as exc:
            raise ConversionError(
                f"ONNX Runtime's dynamic quantizer failed on {source.onnx.name}: "
                f"{_first_line(exc)}",
                hint=f"methods that would work: {ALTERNATIVES}",
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        notes = []
        if rewritten:
            notes.append(f"{rewritten} Gemm nodes rewritten as MatMul + Add to quantize them")
        if "Conv" in self.op_types:
            notes.append("Conv became ConvInteger, measured slower than FP32 on x86 CPUs")
        return self._variant(source, out, notes)

    def _ort_op_types(self) -> list[str]:
        # Gemm reaches the quantizer as the MatMul it was rewritten to.
        ops = {op for op in self.op_types if op != "Gemm"}
        return sorted(ops | ({"MatMul"} if "Gemm" in self.op_types else set()))

    def _matmul_form(self, model: Path, work: Path) -> tuple[Path, int]:
        if "Gemm" not in self.op_types:
            return model, 0
        proto, rewritten = gemm_to_matmul(onnx.load(str(model)))
        if rewritten == 0:
            return model, 0
        target = work / "matmul.onnx"
        onnx.save(proto, str(target))
        return target, rewritten


@register("fp16")
class Float16(_Quantizer):
    """FP16 weights and activations (inputs/outputs stay float32 with ``keep_io_types``)."""

    name = "fp16"

    def __init__(self, *, keep_io_types: bool = True) -> None:
        self.keep_io_types = _flag(keep_io_types, "keep_io_types")

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Convert ``source.onnx`` to FP16 into ``out``.

        Raises:
            ConfigError: not fitted.
            ConversionError: the converter failed.
        """
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        self._check_fitted()
        tmp = _atomic_target(out)
        try:
            half = OnnxModel(
                convert_float_to_float16(
                    onnx.load(str(source.onnx)), keep_io_types=self.keep_io_types
                )
            )
            # The converter appends the input Casts last; the ONNX checker needs nodes in
            # topological order (ORT does not mind, other engines and inspect_onnx do).
            half.topological_sort()
            strip_debug_info(half.model)
            onnx.save(half.model, str(tmp))
            tmp.replace(out)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as exc:
            raise ConversionError(
                f"FP16 conversion of {source.onnx.name} failed: {_first_line(exc)}"
            ) from exc
        finally:
            tmp.unlink(missing_ok=True)
        note = (
            "FP16 halves the weights' bytes; ONNX Runtime's CPU provider runs most FP16 ops by "
            "casting to FP32, so expect no CPU speed-up (measure it with edgeloop bench)"
        )
        return self._variant(source, out, [note], quantized=False)
