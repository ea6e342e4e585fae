"""``qat``: quantization-aware training -- fine-tune with INT8 fake quantization, export QDQ.

Post-training quantization rounds weights and activations the network never saw rounded; QAT
fine-tunes the network with the rounding in its forward pass (:mod:`.fake_quant`), so the weights
move to where the rounding costs least (Jacob et al. 2018, arXiv:1712.05877). The result is an
ONNX file in the QDQ format: weights stored as int8 initializers behind DequantizeLinear,
activations wrapped in QuantizeLinear / DequantizeLinear pairs with the ranges learned in
training. ONNX Runtime fuses those patterns into QLinearConv / QGemm and runs them in INT8.

Steps of :meth:`QuantizationAwareTraining.apply`:

1. load the parent checkpoint; fold BatchNorm into the convolutions; insert fake quantizers;
2. set the activation ranges from ``calibration_samples`` training samples (min / max);
3. fine-tune on the train split, early-stopping on the val split (the ranges keep moving as
   an EMA of the batch ranges and are saved with the best epoch's weights);
4. fix the ranges, export, and let ONNX Runtime's basic (portable, ONNX-only) offline
   optimization fold each weight's QuantizeLinear into an int8 initializer: the file holds
   int8 weights, so it is about 4x smaller than FP32.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from edgeloop.core.errors import ConfigError, ConversionError
from edgeloop.optimize.base import ModelSource, Variant, register
from edgeloop.optimize.fake_quant import calibrate, float_weights, freeze, quantize_module
from edgeloop.optimize.finetune import (
    CLASSIFIER_ARCHES,
    FineTuneOptimizer,
    checkpoint_beside,
)
from edgeloop.optimize.pruned_checkpoint import save_module
from edgeloop.training.zoo import Probabilities

METHOD = "qat"


@register(METHOD)
class QuantizationAwareTraining(FineTuneOptimizer):
    """Fine-tune a zoo classifier with INT8 fake quantization; write a QDQ ONNX file.

    ``per_channel`` picks one weight scale per output channel (True) or one per tensor;
    activations are always per tensor. The fine-tune runs ``epochs`` epochs at most with Adam at
    ``lr``, stopping after ``patience`` epochs without a better val loss.

    Raises:
        ConfigError: a setting out of range (the message names it and the allowed range).
    """

    name = METHOD
    arches = CLASSIFIER_ARCHES

    def __init__(
        self,
        epochs: int = 5,
        lr: float = 5e-4,
        per_channel: bool = True,
        calibration_samples: int = 512,
        batch_size: int = 64,
        patience: int = 3,
        seed: int = 0,
    ) -> None:
        if not isinstance(per_channel, bool):
            raise ConfigError(f"method 'qat': per_channel {per_channel!r} must be true or false")
        if isinstance(calibration_samples, bool) or not (
            isinstance(calibration_samples, int) and 1 <= calibration_samples <= 100_000
        ):
            raise ConfigError(
                f"method 'qat': calibration_samples {calibration_samples!r} is out of range; "
                "expected an integer 1..100000"
            )
        self.per_channel = per_channel
        self.calibration_samples = calibration_samples
        self.set_schedule(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, seed=seed)

    def apply(self, source: ModelSource, out: Path) -> Variant:
        """Fine-tune the checkpoint of ``source`` with fake quantization; write QDQ ``out``.

        Raises:
            ConfigError: not fitted, no checkpoint, or an arch QAT cannot handle.
            NotFoundError, UntrustedArtifactError: a missing or corrupt checkpoint.
            ConversionError: the export or ONNX Runtime's weight folding failed.
        """
        splits = self.fitted_splits()
        parent, arch = self.load_parent(source)
        model = quantize_module(parent, per_channel=self.per_channel, arch_name=arch.arch)
        calibrate(model, torch.from_numpy(splits.train.x[: self.calibration_samples]))
        before = self.val_score(model)
        config = self.required_schedule()
        result = self.train(model, arch, config)
        after = self.val_score(model)
        self._export(freeze(model), out)
        ckpt = save_module(checkpoint_beside(out), float_weights(model, parent), arch, fit=config)
        extra: dict[str, Any] = {
            "val_accuracy_before_fine_tune": before,
            "val_accuracy": after,
            "val_split": self.val_split(),
            "fine_tune_epochs_run": result.epochs_run,
            "fine_tune_best_epoch": result.best_epoch,
            "fine_tune_seconds": result.train_seconds,
            "qdq_nodes": qdq_counts(out),
        }
        return self.variant(
            source,
            out,
            checkpoint=ckpt,
            settings={"weights": "int8 symmetric [-127, 127]", "activations": "uint8 per tensor"},
            extra=extra,
            notes=(
                "QDQ format: ONNX Runtime fuses DequantizeLinear -> Conv/Gemm -> QuantizeLinear "
                "into QLinearConv / QGemm and runs them in INT8",
                "the checkpoint holds the fine-tuned float weights (BatchNorm folded into the "
                "convolutions); the INT8 scales live in the ONNX file",
            ),
        )

    def _export(self, model: torch.nn.Module, out: Path) -> None:
        raw = out.with_name(f".{out.stem}.fake-quant-{os.getpid()}.onnx")
        try:
            self.export(Probabilities(model).eval(), raw)
            fold_weights(raw, out)
        finally:
            raw.unlink(missing_ok=True)


def fold_weights(src: Path, dst: Path) -> Path:
    """Write ``src`` to ``dst`` with constant sub-graphs folded by ONNX Runtime (basic level).

    The basic level only applies rewrites that keep the graph standard ONNX (constant folding,
    redundant node removal); it folds QuantizeLinear(float weight) into an int8 initializer and
    keeps every DequantizeLinear, so the file stays in the portable QDQ format.

    Raises:
        ConversionError: ONNX Runtime cannot load ``src``.
    """
    import onnxruntime as ort

    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        tmp.replace(dst)
    except Exception as exc:  # ORT's error classes are not public API
        raise ConversionError(
            f"ONNX Runtime {ort.__version__} could not fold the weights of {str(src)!r}: {exc}",
            hint="the fake-quantized export is not valid QDQ; report this with the model",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def qdq_counts(path: Path) -> dict[str, int]:
    """How many QuantizeLinear and DequantizeLinear nodes the graph at ``path`` has."""
    import onnx

    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return {op: ops[op] for op in ("QuantizeLinear", "DequantizeLinear")}
