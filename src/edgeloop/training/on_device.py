"""On-device incremental training: fine-tune a checkpoint on a node's new labelled samples.

Against catastrophic forgetting (McCloskey & Cohen 1989) every batch mixes the new samples with
samples drawn from a bounded replay buffer of the node's earlier samples (experience replay,
e.g. Rolnick et al. 2019, "Experience Replay for Continual Learning"); the buffer is a uniform
reservoir (:mod:`edgeloop.training.replay`). Before the result is accepted, accuracy on old data
is measured before and after; a run that forgets more than ``max_forgetting_pp`` points is
rejected (a typed result, not an exception) and writes no model. An accepted run writes a new
checkpoint folder and its ONNX export (parity-checked), atomically: the folder appears whole or
not at all. The worker process (:mod:`edgeloop.training.on_device_worker`) runs this with a CPU
and memory budget; the serving path never imports this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edgeloop.core.errors import ConfigError, ConflictError, DataError
from edgeloop.data.dataset import Dataset, Task
from edgeloop.training.checkpoint import (
    CONFIG,
    WEIGHTS,
    load_checkpoint,
    read_checkpoint,
)
from edgeloop.training.metrics import predict_logits
from edgeloop.training.on_device_output import peak_rss_mb, write_output
from edgeloop.training.on_device_result import (
    IncrementalConfig,
    IncrementalResult,
    Rejection,
    decide,
    lineage_label,
)
from edgeloop.training.replay import ReplayBuffer, load_replay
from edgeloop.training.zoo import ArchConfig

__all__ = ["IncrementalConfig", "IncrementalResult", "Rejection", "incremental_train"]

Arrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
Data = Dataset | tuple[npt.ArrayLike, npt.ArrayLike]
CALIBRATION_ROWS = 2048  # training-side samples kept for a rebuilt variant's quantization


def incremental_train(
    checkpoint: str | Path,
    new_data: Data,
    config: IncrementalConfig | None = None,
    *,
    out: str | Path | None = None,
    old_data: Data | None = None,
    new_test: Data | None = None,
    replay_path: str | Path | None = None,
    parent_ref: str | None = None,
    node_id: str = "local",
    counter: int = 1,
    export: bool = True,
    defer_decision: bool = False,
) -> IncrementalResult:
    """Fine-tune the checkpoint at ``checkpoint`` on ``new_data`` (a Dataset or (x, y)).

    Accuracy on the new data is measured on ``new_test`` when given (all of ``new_data`` is
    then trained on), else on a held-out ``holdout_share`` of ``new_data``.
    ``old_data`` (e.g. the original test split) is what forgetting is measured on; without it,
    a held-out slice of the replay buffer at ``replay_path`` is. The new samples join the
    buffer after the run (accepted or not), so a node accumulates its history. An accepted run
    writes ``out`` (a checkpoint folder with ``model.onnx``) when ``out`` is given.

    ``defer_decision``: the model this run makes is not the one served (an edge variant is
    quantized again from its export, training/on_device_rebuild.py), so the forgetting and gain
    checks are the rebuilt model's: this run accepts whatever did not diverge (its own figures
    and verdict in ``reason``) and writes ``eval.npz`` into ``out``: the new-data hold-out and
    the old data the check scores, and the training-side samples (new + replay) it calibrates on.

    Raises:
        NotFoundError, UntrustedArtifactError: the checkpoint is missing or corrupt.
        ConfigError: a non-classifier checkpoint (or a pruned one), ``out`` not writable.
        ConflictError: ``out`` already exists.
        DataError: data of the wrong shape, non-finite values, labels outside the classes,
            fewer than 2 new samples.
        ParityError: the ONNX export disagrees with the trained module.
    """
    cfg = config if config is not None else IncrementalConfig()
    start = time.perf_counter()
    info = read_checkpoint(checkpoint)
    _refuse_pruned(Path(checkpoint))
    module, arch = load_checkpoint(checkpoint)
    if arch.task is not Task.CLASSIFICATION:
        raise ConfigError(
            f"checkpoint {str(checkpoint)!r} is a {arch.task.value} model ({arch.arch})",
            hint="incremental training fine-tunes classifiers",
        )
    # A checkpoint without class names (saved without its data set) takes labels as indices.
    classes = info.classes or tuple(str(i) for i in range(arch.num_classes))
    named = bool(info.classes)
    lineage = lineage_label(parent_ref or Path(checkpoint).name, node_id, counter)
    x, y = _arrays(new_data, arch, classes if named else None, "new data")
    old = (
        None
        if old_data is None
        else _arrays(old_data, arch, classes if named else None, "old data")
    )
    target = None if out is None else Path(out)
    if target is not None and target.exists():
        raise ConflictError(
            f"output {str(target)!r} already exists", hint="pass a new folder to --out"
        )
    rng = np.random.default_rng(cfg.seed)
    train_idx, hold_idx = _holdout(len(y), cfg.holdout_share, rng)
    holdout = (x[hold_idx], y[hold_idx])
    if new_test is not None:
        holdout = _arrays(new_test, arch, classes if named else None, "new test data")
        train_idx = np.arange(len(y))
    buffer = ReplayBuffer(max(1, cfg.replay_size), arch.input_shape, cfg.seed)
    if replay_path is not None and cfg.replay_size > 0:
        buffer = load_replay(replay_path, cfg.replay_size, arch.input_shape, cfg.seed)
    pool, old_xy, old_source = _pool_and_old(buffer, old, cfg, rng)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            new_before, old_before = _acc(module, holdout), _acc_opt(module, old_xy)
            frozen = _freeze(module, cfg.train_last_layers)
            run = _train(module, frozen, (x[train_idx], y[train_idx]), pool, cfg, rng, start)
            new_after, old_after = _acc(module, holdout), _acc_opt(module, old_xy)
    finally:
        torch.set_num_threads(prev_threads)
    epochs_run, used, diverged, exhausted = run
    train_peak = peak_rss_mb()  # before the ONNX export, which needs more than training
    rejection, reason = decide(cfg, diverged, new_before, new_after, old_before, old_after)
    if defer_decision and rejection in (Rejection.FORGETTING, Rejection.NO_GAIN):
        rejection, reason = None, f"left to the rebuilt model's check (this FP32 run: {reason})"
    elif defer_decision and rejection is None:
        reason = f"left to the rebuilt model's check (this FP32 run: {reason})"
    evaluation = None
    if defer_decision and old_xy is not None:
        evaluation = _evaluation((x[train_idx], y[train_idx]), pool, holdout, old_xy)
    written: tuple[str | None, str | None, float | None] = (None, None, None)
    if rejection is None and target is not None:
        written = write_output(
            target, module, arch, info, classes, (x, y), holdout, lineage, cfg, export,
            evaluation,
        )  # fmt: skip
    if replay_path is not None and cfg.replay_size > 0:
        buffer.add(x, y)
        buffer.save(replay_path)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return IncrementalResult(
        accepted=rejection is None,
        rejection=rejection,
        reason=reason,
        lineage=lineage,
        new_accuracy_before=new_before,
        new_accuracy_after=new_after,
        old_accuracy_before=old_before,
        old_accuracy_after=old_after,
        old_source=old_source,
        new_train_samples=len(train_idx),
        new_holdout_samples=len(holdout[1]),
        old_samples=0 if old_xy is None else len(old_xy[1]),
        replay_samples_used=used,
        replay_buffer_size=len(buffer),
        epochs_run=epochs_run,
        budget_exhausted=exhausted,
        wall_seconds=time.perf_counter() - start,
        peak_rss_mb=peak_rss_mb(),
        train_peak_rss_mb=train_peak,
        trainable_parameters=trainable,
        total_parameters=sum(p.numel() for p in module.parameters()),
        threads=cfg.threads,
        output=written[0],
        onnx=written[1],
        onnx_max_abs_diff=written[2],
    )


def _refuse_pruned(folder: Path) -> None:
    """A pruned checkpoint (``layers`` in model.json) is rebuilt by ``edgeloop.optimize``, which
    sits above training in the import order: fine-tune the unpruned parent, then prune again."""
    if folder.name in (CONFIG, WEIGHTS) and not folder.is_dir():
        folder = folder.parent
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    if isinstance(config, dict) and "layers" in config:
        raise ConfigError(
            f"checkpoint {str(folder)!r} is a pruned model (its model.json records pruned "
            "layer widths); incremental training takes an unpruned checkpoint",
            hint="fine-tune the parent checkpoint it was pruned from, then prune the result again",
        )


def _arrays(data: Data, arch: ArchConfig, classes: tuple[str, ...] | None, what: str) -> Arrays:
    """(x float32, y int64 indices into the checkpoint's classes), checked against ``arch``.

    A Dataset's labels are mapped to the checkpoint's classes by name when it names them."""
    if isinstance(data, Dataset):
        x, y = data.x, data.y
        if classes is not None and data.classes != classes:
            index = {c: i for i, c in enumerate(classes)}
            unknown = sorted(set(data.classes[i] for i in np.unique(y)) - set(index))
            if unknown:
                raise DataError(
                    f"{what} {data.name!r} has classes {unknown} the model does not know; it "
                    f"knows {list(classes)}",
                    hint="label the samples with the model's classes",
                )
            y = np.asarray([index[data.classes[i]] for i in y], dtype=np.int64)
    else:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.ndim < 2 or tuple(x.shape[1:]) != arch.input_shape or len(x) != len(y) or y.ndim != 1:
        raise DataError(
            f"{what} has samples of shape {x.shape} and labels of shape {y.shape}; the model "
            f"takes samples of shape {arch.input_shape}, one label each",
            hint=f"reshape the samples to (n, {', '.join(map(str, arch.input_shape))})",
        )
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise DataError(f"{what} holds non-numeric, NaN or infinite values; expected finite x")
    k = arch.num_classes
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= k)):
        names = "" if classes is None else f" ({', '.join(classes)})"
        raise DataError(
            f"{what} has labels {sorted(set(np.unique(y).tolist()))[:10]}; the model's classes "
            f"are 0..{k - 1}{names}",
            hint="labels must be integer indices of the model's classes",
        )
    if len(y) < 2 and what == "new data":
        raise DataError(f"{what} holds {len(y)} samples; need >= 2 (one is held out)")
    if len(y) < 1:
        raise DataError(f"{what} holds no samples")
    return x.astype(np.float32), y.astype(np.int64)


def _holdout(
    n: int, share: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    perm = rng.permutation(n)
    hold = min(n - 1, max(1, round(n * share)))
    return np.sort(perm[hold:]), np.sort(perm[:hold])


def _pool_and_old(
    buffer: ReplayBuffer, old: Arrays | None, cfg: IncrementalConfig, rng: np.random.Generator
) -> tuple[Arrays | None, Arrays | None, str]:
    """(replay pool or None, old data or None, where the old data came from).

    Without given old data, a held-out slice of the buffer is the old data and is not replayed
    in this run (otherwise the check would measure samples it just trained on)."""
    replay = cfg.replay_size > 0 and cfg.replay_share > 0.0 and len(buffer) > 0
    if old is not None:
        return ((buffer.x, buffer.y) if replay else None), old, "given old data"
    if cfg.replay_size == 0 or len(buffer) == 0:
        return None, None, "none: no old data given and the replay buffer is empty"
    n = len(buffer)
    idx = rng.permutation(n)[: max(1, round(n * cfg.holdout_share))]
    rest = np.setdiff1d(np.arange(n), idx)
    pool = (buffer.x[rest], buffer.y[rest]) if replay and len(rest) else None
    source = f"replay buffer held-out slice ({len(idx)} of {n} samples)"
    return pool, (buffer.x[np.sort(idx)], buffer.y[np.sort(idx)]), source


def _acc(module: nn.Module, data: Arrays) -> float:
    pred = predict_logits(module, data[0]).argmax(axis=1)
    return float((pred == data[1]).mean())


def _acc_opt(module: nn.Module, data: Arrays | None) -> float | None:
    return None if data is None else _acc(module, data)


def _freeze(module: nn.Module, last: int | None) -> list[nn.Module]:
    """Freeze all but the last ``last`` layers that own parameters; returns the frozen ones."""
    layers = [m for m in module.modules() if next(m.parameters(recurse=False), None) is not None]
    frozen = [] if last is None else layers[: max(0, len(layers) - last)]
    for layer in frozen:
        for p in layer.parameters(recurse=False):
            p.requires_grad_(False)
    return frozen


def _batches(
    n: int, cfg: IncrementalConfig, pool: int, rng: np.random.Generator
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """(new-sample indices, replay indices) per batch: one epoch is one pass over the new."""
    n_replay = round(cfg.batch_size * cfg.replay_share) if pool else 0
    n_new = max(1, cfg.batch_size - n_replay)
    order = rng.permutation(n)
    for s in range(0, n, n_new):
        idx = order[s : s + n_new]
        rep = rng.integers(0, pool, n_replay) if pool else np.zeros(0, dtype=np.int64)
        if len(idx) + len(rep) > 1:  # BatchNorm cannot normalise one sample in train mode
            yield idx, rep


def _train(
    module: nn.Module,
    frozen: list[nn.Module],
    new: Arrays,
    pool: Arrays | None,
    cfg: IncrementalConfig,
    rng: np.random.Generator,
    start: float,
) -> tuple[int, int, bool, bool]:
    """Adam on the trainable parameters; (epochs run, replay samples used, diverged, budget)."""
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    xt, yt = torch.from_numpy(new[0]), torch.from_numpy(new[1])
    px = torch.from_numpy(pool[0]) if pool is not None else torch.zeros(0)
    py = torch.from_numpy(pool[1]) if pool is not None else torch.zeros(0, dtype=torch.int64)
    used, epochs = 0, 0
    for _ in range(cfg.epochs):
        module.train()
        for layer in frozen:  # frozen BatchNorm keeps its running statistics too
            layer.eval()
        if cfg.keep_norm_stats:
            for layer in module.modules():
                if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                    layer.eval()
        for idx, rep in _batches(len(yt), cfg, len(py), rng):
            xb = torch.cat([xt[idx], px[rep]]) if len(rep) else xt[idx]
            yb = torch.cat([yt[idx], py[rep]]) if len(rep) else yt[idx]
            loss = nn.functional.cross_entropy(module(xb), yb)
            if not torch.isfinite(loss):
                module.eval()
                return epochs, used, True, False
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt.step()
            used += len(rep)
            if cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds:
                module.eval()
                return epochs + 1, used, False, True
        epochs += 1
    module.eval()
    return epochs, used, False, False


def _evaluation(train: Arrays, pool: Arrays | None, holdout: Arrays, old: Arrays) -> dict[str, Any]:
    """``eval.npz``'s arrays (defer_decision): calibration from the training side only (the new
    samples trained on and the replay pool, evenly spaced), never the hold-out or the old data
    the check scores (the replay pool excludes the buffer's held-out slice)."""
    cx = train[0] if pool is None else np.concatenate([train[0], pool[0]])
    cy = train[1] if pool is None else np.concatenate([train[1], pool[1]])
    if len(cy) > CALIBRATION_ROWS:
        pick = np.linspace(0, len(cy) - 1, CALIBRATION_ROWS).round().astype(np.int64)
        cx, cy = cx[pick], cy[pick]
    return {"calibration_x": cx, "calibration_y": cy, "holdout_x": holdout[0],
            "holdout_y": holdout[1], "old_x": old[0], "old_y": old[1]}  # fmt: skip
