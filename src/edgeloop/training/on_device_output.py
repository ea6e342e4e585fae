"""Where an accepted incremental run lands: a checkpoint folder with its ONNX export, written
whole or not at all; and the worker's peak memory figure."""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Dataset, Modality
from edgeloop.training.checkpoint import CheckpointInfo, save_checkpoint
from edgeloop.training.metrics import evaluate
from edgeloop.training.on_device_result import IncrementalConfig
from edgeloop.training.zoo import ArchConfig, deployable

Arrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
SELF_TEST = "selftest.npz"  # sample inputs and the trained module's outputs for them
SELF_TEST_ROWS = 4
EVAL = "eval.npz"  # a deferred run's hold-out, old data and calibration samples (on_device.py)


def write_output(
    target: Path,
    module: nn.Module,
    arch: ArchConfig,
    info: CheckpointInfo,
    classes: tuple[str, ...],
    new: Arrays,
    holdout: Arrays,
    lineage: str,
    cfg: IncrementalConfig,
    export: bool,
    evaluation: dict[str, Any] | None = None,
) -> tuple[str, str | None, float | None]:
    """Write checkpoint (+ model.onnx, + ``eval.npz`` when ``evaluation`` is given) into a temp
    folder beside ``target``, then rename it."""

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    modality = Modality.IMAGE if len(arch.input_shape) == 3 else Modality.TABULAR
    data = Dataset(f"{info.dataset or 'local'}+{lineage}", new[0], new[1], classes, modality)
    held = data.with_arrays(holdout[0], holdout[1], name="new-holdout")
    extra = {"lineage": lineage, "incremental": cfg.to_dict(), "parent_dataset": info.dataset}
    try:
        save_checkpoint(
            tmp, module, arch, info.fit, evaluate(module, held), dataset=data, extra=extra
        )
        onnx, diff = None, None
        if evaluation is not None:
            with (tmp / EVAL).open("wb") as fh:
                np.savez(fh, **evaluation)
        if export:
            wrapped = deployable(module, arch)
            diff = export_light(wrapped, np.ascontiguousarray(new[0][:64]), tmp / "model.onnx")
            onnx = str(target / "model.onnx")
            write_self_test(tmp / SELF_TEST, wrapped, tmp / "model.onnx", new[0][:SELF_TEST_ROWS])
        tmp.rename(target)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {str(target)!r}: {exc.strerror or exc}", hint="pass a writable --out"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target), onnx, diff


def export_light(wrapped: nn.Module, x_check: npt.NDArray[np.float32], path: Path) -> float:
    """Export with torch's TorchScript-based exporter (``dynamo=False``), then check parity
    with ONNX Runtime on ``x_check`` (real new samples; the tolerance and top-1 rule of
    :func:`edgeloop.formats.onnx_export.export_checked`); the largest |ONNX - torch|.

    Why not the dynamo exporter the rest of edgeloop uses: on the digits CNN it took the
    worker from 360 to 467 MiB resident and ~10 s, this one to ~290 MiB and ~1.4 s
    (docs/on_device.md), and a node's memory budget is what this worker is about. Input and
    output are named ``input`` / ``output`` with a dynamic batch axis, as export_onnx names
    them, so clients call the node-local version as they called its parent.

    Raises:
        ConversionError: the exporter failed. ParityError: the file disagrees (removed).
    """
    import contextlib
    import sys
    import warnings

    import torch

    from edgeloop.core.errors import ConversionError
    from edgeloop.formats.onnx_export import DEFAULT_OPSET, DEFAULT_TOLERANCE
    from edgeloop.formats.parity import check_parity, measure_parity, onnx_predictor

    wrapped = wrapped.eval()
    sample = torch.from_numpy(np.ascontiguousarray(np.concatenate([x_check[:1], x_check[:1]])))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")  # stdout carries only the worker's JSON line
            torch.onnx.export(wrapped, (sample,), str(path), input_names=["input"],
                              output_names=["output"], opset_version=DEFAULT_OPSET,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              dynamo=False)  # fmt: skip
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise ConversionError(
            f"torch -> ONNX export (TorchScript exporter) failed: {str(exc).splitlines()[0]}"
        ) from exc

    def reference(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            return np.asarray(wrapped(torch.from_numpy(x)).numpy(), dtype=np.float32)

    parity = measure_parity(reference, onnx_predictor(path), x_check, split="new data")
    try:
        check_parity(parity, tolerance=DEFAULT_TOLERANCE)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return float(parity.max_abs_diff)


def export_folder(folder: Path, x_check: npt.NDArray[np.float32]) -> float:
    """Export the checkpoint in ``folder`` (written by an accepted run with ``--no-onnx``) to
    ``folder/model.onnx`` with its ``selftest.npz``: the export in a process of its own, after
    the training process ended, so the node's peak memory is the larger of the two, not their
    sum (on_device_worker ``--export``). The largest |ONNX - torch| on ``x_check``.

    Raises:
        ConflictError: ``folder`` already holds a model.onnx. What export_light raises.
    """
    from edgeloop.core.errors import ConflictError
    from edgeloop.training.checkpoint import load_checkpoint

    onnx = folder / "model.onnx"
    if onnx.exists():
        raise ConflictError(f"{str(onnx)!r} already exists", hint="export into a new folder")
    module, arch = load_checkpoint(folder)
    wrapped = deployable(module, arch)
    diff = export_light(wrapped, np.ascontiguousarray(x_check[:64]), onnx)
    write_self_test(folder / SELF_TEST, wrapped, onnx, x_check[:SELF_TEST_ROWS])
    return diff


def write_self_test(
    path: Path, wrapped: nn.Module, onnx_file: Path, sample: npt.NDArray[np.float32]
) -> None:
    """``selftest.npz``: ``input:NAME`` (real new samples) and ``output:NAME`` (what the
    trained torch module answers for them), named as the ONNX graph names its tensors: the
    reference an agent's self-test checks the exported file against on its own engine
    (agent/train_worker.py), as the control plane's deployment documents carry one."""
    import onnx
    import torch

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    with torch.no_grad():
        out = wrapped(torch.from_numpy(np.ascontiguousarray(sample))).numpy()
    arrays = {f"input:{graph.input[0].name}": sample, f"output:{graph.output[0].name}": out}
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (VmHWM; getrusage's ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024.0 if kib > 0 else None
