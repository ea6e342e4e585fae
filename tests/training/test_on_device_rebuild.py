"""An edge variant rebuilt from its fine-tuned parent: the deferred run's evaluation file, the
re-quantization, and a decision taken on the quantized file (training/on_device_rebuild.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeloop.core.errors import NotFoundError
from edgeloop.data.dataset import Splits
from edgeloop.optimize.rebuild import rebuild
from edgeloop.optimize.recipe import Recipe
from edgeloop.training.on_device import IncrementalConfig, incremental_train
from edgeloop.training.on_device_output import EVAL, SELF_TEST, export_folder
from edgeloop.training.on_device_rebuild import FP32_FILE, rebuild_folder
from edgeloop.training.zoo import deployable

from .test_on_device import seeded_replay, shifted, trained  # noqa: F401 (the fixture)


def _served_int8(folder: Path, splits: Splits, work: Path) -> Path:
    """What the node serves: the static-INT8 variant of the parent's FP32 export."""
    from edgeloop.training.checkpoint import load_checkpoint
    from edgeloop.training.on_device_output import export_light

    module, arch = load_checkpoint(folder)
    fp32 = work / "parent.onnx"
    export_light(deployable(module, arch), splits.train.x[:32], fp32)
    plan = Recipe.parse("static-int8")
    return rebuild(plan, fp32, splits.train, splits.val, work / "q")[-1].path


def _deferred(folder: Path, splits: Splits, tmp_path: Path, out: str) -> Path:
    cfg = IncrementalConfig(epochs=20, lr=1e-2, seed=0, max_forgetting_pp=-50.0)
    r = incremental_train(folder, shifted(48, seed=5), cfg, out=tmp_path / out,
                          old_data=splits.test, export=False, defer_decision=True,
                          replay_path=seeded_replay(tmp_path / f"{out}.npz", splits))  # fmt: skip
    # -50 pp would reject this FP32 run: deferred, it is left to the rebuilt model's check
    assert r.accepted and r.reason.startswith("left to the rebuilt model's check"), r.reason
    return tmp_path / out


def test_the_rebuilt_int8_model_is_calibrated_on_training_side_samples_and_decides(
    trained: tuple[Path, Splits],  # noqa: F811
    tmp_path: Path,
) -> None:
    torch.set_num_threads(1)
    folder, splits = trained
    served = _served_int8(folder, splits, tmp_path)
    out = _deferred(folder, splits, tmp_path, "out")
    with np.load(out / EVAL) as npz:
        ev = {k: npz[k] for k in npz.files}
    calibration = {row.tobytes() for row in ev["calibration_x"]}
    assert not any(row.tobytes() in calibration for row in ev["holdout_x"])  # never the hold-out
    assert not any(row.tobytes() in calibration for row in ev["old_x"])  # nor the old data
    assert len(ev["calibration_x"]) == 36 + len(splits.train)  # new trained-on + replay pool
    export_folder(out, shifted(48, seed=5)[0])
    strict = rebuild_folder(out, "static-int8", served, IncrementalConfig(max_forgetting_pp=-50.0))
    assert strict["accepted"] is False and strict["rejection"] == "forgetting"
    assert strict["reason"].startswith("rebuilt static-int8, scored with ONNX Runtime")

    out2 = _deferred(folder, splits, tmp_path, "out2")
    export_folder(out2, shifted(48, seed=5)[0])
    r = rebuild_folder(out2, "static-int8", served, IncrementalConfig(max_forgetting_pp=2.0))
    assert r["accepted"], r["reason"]
    assert r["new_accuracy_after"] >= 0.9 and r["new_accuracy_after"] > r["new_accuracy_before"]
    assert r["forgetting_pp"] <= 2.0 and r["rebuilt"]["int_compute_nodes"] > 0
    tuned = r["rebuilt"]["fp32_before_quantization"]  # the FP32 export, same data
    assert set(tuned) == {"new_accuracy", "old_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in tuned.values())
    ops = {n.op_type for n in onnx.load(str(out2 / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and (out2 / FP32_FILE).is_file()
    with np.load(out2 / SELF_TEST) as npz:  # the self-test reference is the INT8 file's answer
        arrays = {k: npz[k] for k in npz.files}
    session = ort.InferenceSession(str(out2 / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {k[6:]: v for k, v in arrays.items() if k.startswith("input:")}
    got = session.run(None, feeds)[0]
    assert np.array_equal(got, arrays[f"output:{session.get_outputs()[0].name}"])


def test_a_rebuild_without_a_deferred_run_is_refused(
    trained: tuple[Path, Splits],  # noqa: F811
    tmp_path: Path,
) -> None:
    folder, _ = trained
    with pytest.raises(NotFoundError, match="--defer-decision"):
        rebuild_folder(folder, "static-int8", tmp_path / "none.onnx", IncrementalConfig())
