"""The incremental-training worker: one process, one run, one JSON line on stdout.

    python -m edgeloop.training.on_device_worker --checkpoint DIR --data NEW.npz --out DIR \\
        [--old-data OLD.npz] [--replay FILE.npz] [--replay-seed SEED.npz] [--epochs N] \\
        [--last-layers N] [--max-seconds S] [--max-memory-mb M] [--threads T] ...

``--export DIR --data NEW.npz [--rebuild-recipe R --baseline SERVED.onnx]`` is the second step
the agent runs after an accepted ``--no-onnx`` run: the ONNX export (and ``selftest.npz``) of
that checkpoint in a fresh process, so the node's peak memory is the larger of the two
processes' (training ~360 MiB, export ~330 MiB for the digits CNN) rather than training plus
exporter in one (~400 MiB; docs/on_device.md). With ``--rebuild-recipe`` (a run started with
``--defer-decision`` on an edge variant's parent) it also quantizes the export again and
decides on the rebuilt file (on_device_rebuild.py): the result line then carries ``accepted``
and the figures of that check.

The agent starts it as a process of its own so the serving path never imports torch, and gives
it a CPU budget (``--threads``, torch's intra-op threads; ``--max-seconds`` stops training
between batches and a watchdog ends the process at twice that plus 30 s) and a memory budget
(``--max-memory-mb``: a watchdog thread reads the resident set every 20 ms and ends the process
when it passes the budget). RLIMIT_AS is not used: torch reserves far more address space than it
ever touches, so an address-space limit fails at import on small budgets that RSS would meet.

Data files are ``.npz`` with ``x`` (samples first) and ``y``: integer class indices of the
model, or indices into an optional ``classes`` array of names (mapped to the model's by name).

stdout carries exactly one JSON line: the result (``accepted`` true or false; a rejection is a
result, exit 0) or ``{"error", "message", "hint", "exit_code"}``; the exit code comes from the
error tree (:mod:`edgeloop.core.errors`). No traceback is printed for an EdgeError.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from edgeloop.core.errors import ConfigError, DataError, EdgeError, NotFoundError

_POLL_S = 0.02


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgeloop.training.on_device_worker")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder to fine-tune")
    p.add_argument("--data", required=True, help=".npz of new labelled samples (x, y)")
    p.add_argument("--out", required=True, help="new checkpoint folder (must not exist)")
    p.add_argument("--old-data", help=".npz of old samples to measure forgetting on")
    p.add_argument("--new-test", help=".npz of held-out new samples (default: a share of --data)")
    p.add_argument("--replay", help=".npz replay buffer file (created when missing)")
    p.add_argument(
        "--replay-seed",
        help=".npz (x, y) of earlier samples that start the replay buffer when --replay does "
        "not exist yet (e.g. a share of the training split; ignored once the buffer exists)",
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--replay-size", type=int, default=500)
    p.add_argument("--replay-share", type=float, default=0.5)
    p.add_argument("--last-layers", type=int, default=None)
    p.add_argument("--max-forgetting-pp", type=float, default=1.0)
    p.add_argument("--min-gain-pp", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--max-memory-mb", type=float, default=None)
    p.add_argument("--parent-ref", default=None, help="e.g. digits-cnn:3 (default: folder name)")
    p.add_argument("--node-id", default="local")
    p.add_argument("--counter", type=int, default=1)
    p.add_argument(
        "--update-norm-stats",
        action="store_true",
        help="let BatchNorm running statistics follow the new batches (default: kept)",
    )
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument(
        "--defer-decision",
        action="store_true",
        help="the served model is rebuilt from this run's export (--export --rebuild-recipe): "
        "accept unless diverged and write eval.npz for the rebuilt model's check",
    )
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgeloop.training.on_device_worker --export")
    p.add_argument("--export", required=True, help="checkpoint folder of an accepted run")
    p.add_argument("--data", required=True, help=".npz whose x checks the export's parity")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-memory-mb", type=float, default=None)
    p.add_argument(
        "--rebuild-recipe",
        help="the edge variant's recipe (e.g. static-int8) to apply to the export; the check "
        "then scores the rebuilt file against --baseline (training/on_device_rebuild.py)",
    )
    p.add_argument("--baseline", help="the served variant's ONNX file (accuracy before)")
    p.add_argument("--max-forgetting-pp", type=float, default=1.0)
    p.add_argument("--min-gain-pp", type=float, default=0.0)
    return p


def export(argv: list[str]) -> dict[str, Any]:
    """``--export DIR --data NEW.npz``: the ONNX export of an accepted ``--no-onnx`` run, as a
    process of its own (module doc); ``{"onnx", "onnx_max_abs_diff", "wall_seconds",
    "peak_rss_mb"}``."""
    args = _export_parser().parse_args(argv)
    _watchdog(args.max_memory_mb, None)
    start = time.perf_counter()
    data = _read(args.data, "--data")
    x = data.x if hasattr(data, "x") else data[0]
    import torch

    from edgeloop.training.on_device_output import export_folder, peak_rss_mb

    torch.set_num_threads(max(1, args.threads))
    folder = Path(args.export)
    if not folder.is_dir():
        raise NotFoundError(f"--export folder {args.export!r} does not exist")
    diff = export_folder(folder, np.asarray(x, np.float32))
    checked: dict[str, Any] = {}
    if args.rebuild_recipe is not None:
        checked = _rebuild(folder, args)
    return {"onnx": str(folder / "model.onnx"), "onnx_max_abs_diff": diff, **checked,
            "wall_seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def _rebuild(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``--rebuild-recipe``: the variant rebuilt from the export and its check's figures."""
    from edgeloop.training.on_device_rebuild import rebuild_folder
    from edgeloop.training.on_device_result import IncrementalConfig

    if args.baseline is None:
        raise ConfigError("--rebuild-recipe needs --baseline: the served variant's ONNX file")
    cfg = IncrementalConfig(max_forgetting_pp=args.max_forgetting_pp,
                            min_gain_pp=args.min_gain_pp, threads=args.threads)  # fmt: skip
    return rebuild_folder(folder, args.rebuild_recipe, Path(args.baseline), cfg)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _report(err: EdgeError) -> int:
    _emit({**err.to_dict(), "exit_code": err.exit_code})
    print(f"error: {err}", file=sys.stderr)
    sys.stderr.flush()
    return err.exit_code


def _fail(err: EdgeError) -> NoReturn:
    os._exit(_report(err))  # from the watchdog thread: end the whole process now


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _watchdog(max_mb: float | None, deadline_s: float | None) -> None:
    """A daemon thread ending the process past the memory or the hard wall-clock budget."""
    start = time.monotonic()

    def watch() -> None:
        while True:
            if max_mb is not None and (rss := _rss_mb()) > max_mb:
                _fail(
                    ConfigError(
                        f"the training worker's resident memory {rss:.0f} MiB passed its budget "
                        f"--max-memory-mb {max_mb:g}",
                        hint="raise --max-memory-mb, lower --batch-size, or train fewer layers "
                        "(--last-layers 1)",
                    )
                )
            if deadline_s is not None and time.monotonic() - start > deadline_s:
                _fail(
                    ConfigError(
                        f"the training worker ran past its hard limit of {deadline_s:g} s",
                        hint="raise --max-seconds or train on fewer samples / epochs",
                    )
                )
            time.sleep(_POLL_S)

    threading.Thread(target=watch, name="budget-watchdog", daemon=True).start()


def _read(path: str, what: str) -> Any:
    """(x, y) from an .npz, or a Dataset when it names its ``classes``."""
    from edgeloop.data.dataset import Dataset, Modality

    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"{what} file {path!r} does not exist", hint="pass an existing .npz")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise DataError(
            f"{what} file {path!r} is not a readable .npz of arrays ({exc})",
            hint="write it with numpy.savez(path, x=samples, y=labels)",
        ) from exc
    if "x" not in arrays or "y" not in arrays:
        raise DataError(
            f"{what} file {path!r} holds arrays {sorted(arrays)}; expected 'x' and 'y'",
            hint="write it with numpy.savez(path, x=samples, y=labels)",
        )
    x, y = arrays["x"], arrays["y"]
    if "classes" not in arrays:
        return x, y
    names = tuple(str(c) for c in arrays["classes"].reshape(-1).tolist())
    modality = Modality.IMAGE if x.ndim == 4 else Modality.TABULAR
    return Dataset(p.stem, np.asarray(x, np.float32), np.asarray(y, np.int64), names, modality)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, set the budgets, train; the result as a dict (raises EdgeError)."""
    args = _parser().parse_args(argv)
    deadline = None if args.max_seconds is None else 2 * args.max_seconds + 30
    if args.max_memory_mb is not None and args.max_memory_mb <= 0:
        raise ConfigError(f"--max-memory-mb {args.max_memory_mb} is not valid; expected > 0")
    _watchdog(args.max_memory_mb, deadline)
    # The flags and the data files are checked before the checkpoint is loaded. (Importing any
    # edgeloop.training module imports torch: the package's __init__ does.)
    from edgeloop.training.on_device_result import IncrementalConfig

    config = IncrementalConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        replay_size=args.replay_size,
        replay_share=args.replay_share,
        train_last_layers=args.last_layers,
        max_forgetting_pp=args.max_forgetting_pp,
        min_gain_pp=args.min_gain_pp,
        seed=args.seed,
        threads=args.threads,
        max_seconds=args.max_seconds,
        keep_norm_stats=not args.update_norm_stats,
    )
    new = _read(args.data, "--data")
    old = None if args.old_data is None else _read(args.old_data, "--old-data")
    test = None if args.new_test is None else _read(args.new_test, "--new-test")
    import torch

    from edgeloop.training.on_device import incremental_train

    torch.set_num_threads(config.threads)
    if args.replay_seed is not None and args.replay is not None and config.replay_size > 0:
        _seed_replay(args.replay, _read(args.replay_seed, "--replay-seed"), config)
    result = incremental_train(
        args.checkpoint,
        new,
        config,
        out=args.out,
        old_data=old,
        new_test=test,
        replay_path=args.replay,
        parent_ref=args.parent_ref,
        node_id=args.node_id,
        counter=args.counter,
        export=not args.no_onnx,
        defer_decision=args.defer_decision,
    )
    return result.to_dict()


def _seed_replay(path: str, seed: Any, config: Any) -> None:
    """Start the buffer at ``path`` from ``seed``'s samples when it does not exist yet."""
    from edgeloop.training.replay import ReplayBuffer

    if Path(path).exists():
        return
    x, y = (seed.x, seed.y) if hasattr(seed, "x") else seed
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
    if x.ndim < 2 or len(x) != len(y) or len(y) == 0:
        raise DataError(
            f"--replay-seed holds samples of shape {x.shape} and labels of shape {y.shape}; "
            "expected n >= 1 samples with one label each",
            hint="write it with numpy.savez(path, x=samples, y=labels)",
        )
    buffer = ReplayBuffer(config.replay_size, tuple(x.shape[1:]), config.seed)
    buffer.add(x, y)
    buffer.save(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        result = export(argv) if "--export" in argv else run(argv)
    except EdgeError as err:
        return _report(err)
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
