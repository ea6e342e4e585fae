"""An edge variant rebuilt on the node from its fine-tuned parent, and the check that decides.

The node serves an INT8 variant whose FP32 parent has the checkpoint (control/train_api.py
sends the parent's checkpoint and the variant's recipe). The training run fine-tunes the
parent's weights with ``defer_decision`` (on_device.py); then, in the export process, after
the FP32 export (on_device_output.export_folder), :func:`rebuild_folder` applies the variant's
recipe again (optimize/rebuild.py: ONNX Runtime's post-training quantization, calibrated on
the run's training-side samples only), and scores what will be served with ONNX Runtime:
accuracy before is the served variant's file, accuracy after the rebuilt one's, on the new
data's hold-out and on the old data. The same rule as a plain run decides (on_device_result.
decide). ``model.onnx`` becomes the rebuilt file (the FP32 export stays as ``model-fp32.onnx``)
and ``selftest.npz`` its outputs on this engine, the reference the node's self-test checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError, NotFoundError
from edgeloop.data.dataset import Dataset, Modality
from edgeloop.training.on_device_output import EVAL, SELF_TEST
from edgeloop.training.on_device_result import IncrementalConfig, decide

FP32_FILE = "model-fp32.onnx"


def rebuild_folder(
    folder: Path, recipe: str, baseline: Path, cfg: IncrementalConfig
) -> dict[str, Any]:
    """Rebuild ``folder/model.onnx`` (the FP32 export) with ``recipe``; the check's figures,
    ``accepted``, ``rejection``, ``reason`` and ``rebuilt`` (what was applied, its census).

    Raises:
        NotFoundError: no ``eval.npz`` (the run was not deferred) or no ``baseline`` file.
        ConfigError: a recipe a node cannot redo. ConversionError: the quantizer failed.
    """
    from edgeloop.optimize.graph import census
    from edgeloop.optimize.rebuild import rebuild
    from edgeloop.optimize.recipe import Recipe
    from edgeloop.training.checkpoint import read_checkpoint

    arrays = _eval_arrays(folder)
    if not baseline.is_file():
        raise NotFoundError(f"--baseline {str(baseline)!r} (the served variant) does not exist")
    info = read_checkpoint(folder)
    classes = info.classes or tuple(str(i) for i in range(info.arch.num_classes))
    modality = Modality.IMAGE if arrays["holdout_x"].ndim == 4 else Modality.TABULAR

    def data(name: str, key: str) -> Dataset:
        x, y = arrays[f"{key}_x"].astype(np.float32), arrays[f"{key}_y"].astype(np.int64)
        return Dataset(name, x, y, classes, modality)

    fp32 = folder / FP32_FILE
    (folder / "model.onnx").replace(fp32)
    work = folder / "rebuild"
    try:
        steps = rebuild(Recipe.parse(recipe), fp32, data("node-train", "calibration"),
                        data("node-holdout", "holdout"), work)  # fmt: skip
        steps[-1].path.replace(folder / "model.onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rebuilt = folder / "model.onnx"
    _self_test(folder / SELF_TEST, rebuilt)
    hold, old = (arrays["holdout_x"], arrays["holdout_y"]), (arrays["old_x"], arrays["old_y"])
    served, new = _session(baseline, cfg.threads), _session(rebuilt, cfg.threads)
    figures = {"new_accuracy_before": _accuracy(served, hold),
               "new_accuracy_after": _accuracy(new, hold),
               "old_accuracy_before": _accuracy(served, old),
               "old_accuracy_after": _accuracy(new, old)}  # fmt: skip
    # the fine-tuned FP32 model before quantization, on the same data: what the training
    # changed, apart from what quantizing it again changed (not part of the decision)
    tuned = _session(fp32, cfg.threads)
    fp32_figures = {"new_accuracy": _accuracy(tuned, hold), "old_accuracy": _accuracy(tuned, old)}
    rejection, reason = decide(
        cfg, False, figures["new_accuracy_before"], figures["new_accuracy_after"],
        figures["old_accuracy_before"], figures["old_accuracy_after"],
    )  # fmt: skip
    final = census(rebuilt)
    return {
        **figures,
        "forgetting_pp": 100.0 * (figures["old_accuracy_before"] - figures["old_accuracy_after"]),
        "accepted": rejection is None,
        "rejection": None if rejection is None else rejection.value,
        "reason": f"rebuilt {recipe}, scored with ONNX Runtime: {reason}",
        "rebuilt": {
            "recipe": recipe,
            "steps": [{"method": s.method, "settings": dict(s.settings)} for s in steps],
            "int_compute_nodes": final.int_compute,
            "float_compute_nodes": final.float_compute,
            "size_bytes": rebuilt.stat().st_size,
            "fp32_size_bytes": fp32.stat().st_size,
            "parity_vs_fp32": steps[-1].parity.to_dict(),
            "calibration_samples": len(arrays["calibration_y"]),
            "fp32_before_quantization": fp32_figures,
        },
    }


def _eval_arrays(folder: Path) -> dict[str, npt.NDArray[Any]]:
    path = folder / EVAL
    if not path.is_file():
        raise NotFoundError(
            f"{str(path)!r} does not exist: the training run was not started with "
            "--defer-decision, so there is no hold-out to score the rebuilt model on",
            hint="run the training worker with --defer-decision before --export --rebuild-recipe",
        )
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if len(arrays.get("calibration_y", ())) == 0:
        raise DataError(f"{str(path)!r} holds no calibration samples")
    return arrays


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _accuracy(session: Any, data: tuple[npt.NDArray[Any], npt.NDArray[Any]]) -> float:
    name = session.get_inputs()[0].name
    out = np.asarray(session.run(None, {name: data[0].astype(np.float32)})[0])
    return float((out.argmax(axis=1) == data[1]).mean())


def _self_test(path: Path, model: Path) -> None:
    """Rewrite ``selftest.npz``'s outputs with the rebuilt file's answers on this engine for
    the same inputs (the FP32 module's answers would differ by the quantization error)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    session = _session(model, 1)
    feeds = {k[6:]: v for k, v in arrays.items() if k.startswith("input:")}
    outputs = session.run(None, feeds)
    for meta, value in zip(session.get_outputs(), outputs, strict=True):
        arrays[f"output:{meta.name}"] = np.asarray(value)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
