"""On-device incremental training: replay, last-layers-only, the forgetting check, the worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeloop.core.errors import ConfigError, ConflictError, DataError, NotFoundError
from edgeloop.data.dataset import Dataset, Modality, Splits
from edgeloop.training import ArchConfig, FitConfig, build, fit, save_checkpoint
from edgeloop.training.checkpoint import WEIGHTS, load_checkpoint
from edgeloop.training.on_device import IncrementalConfig, Rejection, incremental_train
from edgeloop.training.on_device_result import lineage_label
from edgeloop.training.replay import ReplayBuffer, load_replay

from .conftest import blobs, split3


def shifted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Field drift the model can learn without unlearning the old data: the blobs shrink to half
    and move +5 along the feature the old centres never used, a region no old sample is in."""
    ds = blobs(n, seed)
    x = ds.x.copy()
    x[:, :3] *= 0.5
    x[:, 3] += 5.0
    return x, ds.y


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Splits]:
    torch.set_num_threads(1)
    splits = split3(blobs(150, seed=1), val=25, test=25)
    arch = ArchConfig("mlp", (4,), 3, width=4)
    result = fit(arch, splits, FitConfig(epochs=30, seed=0), progress=False)
    folder = tmp_path_factory.mktemp("ck") / "blobs-mlp"
    save_checkpoint(
        folder, result.module, arch, result.config, result.test_metrics, dataset=splits.train
    )
    return folder, splits


def seeded_replay(path: Path, splits: Splits) -> Path:
    buffer = ReplayBuffer(100, (4,), seed=0)
    buffer.add(splits.train.x, splits.train.y)
    return buffer.save(path)


def test_accuracy_on_new_data_improves_on_a_learnable_shift(
    trained: tuple[Path, Splits], tmp_path: Path
) -> None:
    folder, splits = trained
    config = IncrementalConfig(epochs=20, lr=3e-3, seed=0)
    r = incremental_train(
        folder,
        shifted(120, seed=5),
        config,
        old_data=splits.test,
        replay_path=seeded_replay(tmp_path / "replay.npz", splits),
        export=False,
    )
    assert r.accepted, r.reason
    assert r.new_accuracy_after >= r.new_accuracy_before + 0.2
    assert r.new_accuracy_after >= 0.9
    assert r.forgetting_pp is not None and r.forgetting_pp <= 1.0
    assert r.replay_samples_used > 0 and r.new_train_samples + r.new_holdout_samples == 120
    assert r.epochs_run == 20 and r.trainable_parameters == r.total_parameters
    assert r.peak_rss_mb is not None and r.peak_rss_mb > 0


def test_the_new_samples_join_the_persisted_replay_buffer_bounded(
    trained: tuple[Path, Splits], tmp_path: Path
) -> None:
    folder, splits = trained
    replay = seeded_replay(tmp_path / "replay.npz", splits)
    config = IncrementalConfig(epochs=1, replay_size=100)
    incremental_train(folder, shifted(40, seed=6), config, old_data=splits.test, replay_path=replay)
    again = load_replay(replay, 100, (4,))
    assert len(again) == 100 and again.seen == len(splits.train) + 40


def reservoir_counts(runs: int, stream: int, capacity: int, chunk: int) -> np.ndarray:
    counts = np.zeros(stream, dtype=np.int64)
    ids = np.arange(stream, dtype=np.float32)[:, None]
    for seed in range(runs):
        buffer = ReplayBuffer(capacity, (1,), seed=seed)
        for s in range(0, stream, chunk):
            buffer.add(ids[s : s + chunk], np.zeros(len(ids[s : s + chunk]), dtype=np.int64))
            assert len(buffer) <= capacity
        assert buffer.seen == stream and len(set(buffer.x[:, 0].tolist())) == capacity
        counts[buffer.x[:, 0].astype(np.int64)] += 1
    return counts


def test_replay_buffer_is_bounded_and_reservoir_uniform() -> None:
    # Each of 50 samples should be kept with probability 5/50 in each of 1000 seeded runs:
    # 100 expected, binomial sd 9.5. Seeds are fixed, so the counts are the same every run; the
    # 5-sd band (and the halves' balance) would catch a buffer that favours early or late ones.
    runs, stream, capacity = 1000, 50, 5
    counts = reservoir_counts(runs, stream, capacity, chunk=7)
    expected = runs * capacity / stream
    sd = np.sqrt(runs * (capacity / stream) * (1 - capacity / stream))
    assert np.abs(counts - expected).max() < 5 * sd
    assert abs(counts[:25].sum() - counts[25:].sum()) < 5 * np.sqrt(2 * 25) * sd
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 100  # 49 degrees of freedom: P(chi2 > 100) ~ 2e-5 for a uniform reservoir


def test_replay_buffer_does_not_depend_on_how_samples_were_chunked(tmp_path: Path) -> None:
    ids = np.arange(40, dtype=np.float32)[:, None]
    labels = np.zeros(40, dtype=np.int64)
    one = ReplayBuffer(8, (1,), seed=3)
    one.add(ids, labels)
    two = ReplayBuffer(8, (1,), seed=3)
    two.add(ids[:13], labels[:13])
    two.save(tmp_path / "r.npz")
    resumed = load_replay(tmp_path / "r.npz", 8, (1,))
    resumed.add(ids[13:], labels[13:])
    assert np.array_equal(one.x, resumed.x) and resumed.seen == 40


def test_last_layers_only_leaves_frozen_weights_bit_identical(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arch = ArchConfig("cnn", (1, 4, 4), 3, width=2)
    save_checkpoint(tmp_path / "cnn", build(arch), arch, None, None)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1, 4, 4)).astype(np.float32)
    y = np.arange(40, dtype=np.int64) % 3
    # Accept whatever the random net does: this test is about which weights moved.
    loose = IncrementalConfig(
        epochs=3, lr=1e-2, train_last_layers=1, max_forgetting_pp=100, min_gain_pp=-100
    )
    r = incremental_train(
        tmp_path / "cnn", (x, y), loose, old_data=(x, y), out=tmp_path / "out", export=False
    )
    assert r.accepted and r.trainable_parameters == 2 * 2 * 3 + 3  # Linear(4, 3) only
    before = torch.load(tmp_path / "cnn" / WEIGHTS, weights_only=True)
    after = torch.load(tmp_path / "out" / WEIGHTS, weights_only=True)
    head = {k for k in before if k.startswith("13.")}  # the Linear head of the Sequential
    assert head == {"13.weight", "13.bias"}
    for key in before:
        same = torch.equal(before[key], after[key])
        assert same is (key not in head), key  # BatchNorm statistics included


def test_forgetting_check_rejects_a_run_that_destroys_old_accuracy(
    trained: tuple[Path, Splits], tmp_path: Path
) -> None:
    folder, splits = trained
    # Conflicting drift (the features swap roles) learnt with a huge lr and no replay.
    x, y = blobs(120, seed=5).x[:, [1, 2, 0, 3]], blobs(120, seed=5).y
    wild = IncrementalConfig(epochs=20, lr=0.5, replay_size=0)
    r = incremental_train(folder, (x, y), wild, old_data=splits.test, out=tmp_path / "out")
    assert not r.accepted and r.rejection in (Rejection.FORGETTING, Rejection.DIVERGED)
    if r.rejection is Rejection.FORGETTING:
        assert r.forgetting_pp is not None and r.forgetting_pp > 1.0
    assert r.output is None and not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_forgetting_check_accepts_a_gentle_run_and_writes_checkpoint_and_onnx(
    trained: tuple[Path, Splits], tmp_path: Path
) -> None:
    folder, splits = trained
    gentle = IncrementalConfig(epochs=10, lr=1e-3)
    r = incremental_train(
        folder,
        shifted(80, seed=7),
        gentle,
        old_data=splits.test,
        replay_path=seeded_replay(tmp_path / "replay.npz", splits),
        out=tmp_path / "out",
        parent_ref="blobs-mlp:3",
        node_id="node-2",
        counter=1,
    )
    assert r.accepted, r.reason
    assert r.lineage == "blobs-mlp:3+node-2.1"
    tuned, parent = load_checkpoint(tmp_path / "out")[0], load_checkpoint(folder)[0]
    pairs = zip(tuned.parameters(), parent.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert r.onnx is not None and Path(r.onnx).is_file()
    assert r.onnx_max_abs_diff is not None and r.onnx_max_abs_diff <= 1e-4
    config = json.loads((tmp_path / "out" / "model.json").read_text())
    assert config["lineage"] == "blobs-mlp:3+node-2.1"


def test_no_old_data_at_all_is_a_rejection_not_an_exception(
    trained: tuple[Path, Splits],
) -> None:
    folder, _ = trained
    r = incremental_train(folder, shifted(20, 8), IncrementalConfig(epochs=1), export=False)
    assert r.rejection is Rejection.NO_OLD_DATA and r.old_accuracy_before is None


def test_a_given_new_test_set_and_the_time_budget_are_honoured(
    trained: tuple[Path, Splits],
) -> None:
    folder, splits = trained
    test = shifted(30, seed=12)
    tight = IncrementalConfig(epochs=50, max_seconds=1e-6)
    r = incremental_train(folder, shifted(40, 13), tight, old_data=splits.test, new_test=test)
    assert r.new_train_samples == 40 and r.new_holdout_samples == 30
    assert r.budget_exhausted and r.epochs_run == 1


def test_a_pruned_checkpoint_is_refused_with_the_next_step(
    trained: tuple[Path, Splits], tmp_path: Path
) -> None:
    folder, _ = trained
    shutil.copytree(folder, tmp_path / "pruned")
    config = json.loads((tmp_path / "pruned" / "model.json").read_text())
    (tmp_path / "pruned" / "model.json").write_text(json.dumps({**config, "layers": []}))
    with pytest.raises(ConfigError, match="pruned"):
        incremental_train(tmp_path / "pruned", shifted(20, 14))


def test_lineage_label_refuses_an_ambiguous_label() -> None:
    assert lineage_label("digits-cnn:3", "node-2", 1) == "digits-cnn:3+node-2.1"
    with pytest.raises(ConfigError, match="lineage"):
        lineage_label("digits-cnn:3", "node+2", 1)


def test_bad_input_raises_clear_errors(trained: tuple[Path, Splits], tmp_path: Path) -> None:
    folder, splits = trained
    good = shifted(20, 9)
    with pytest.raises(NotFoundError, match="no checkpoint"):
        incremental_train(tmp_path / "missing", good)
    with pytest.raises(DataError, match=r"shape \(4,\)"):
        incremental_train(folder, (np.zeros((20, 5), np.float32), good[1]))
    with pytest.raises(DataError, match="classes are 0..2"):
        incremental_train(folder, (good[0], np.full(20, 7)))
    with pytest.raises(ConfigError, match="epochs 0"):
        IncrementalConfig(epochs=0)
    with pytest.raises(ConfigError, match="replay_share"):
        IncrementalConfig(replay_share=1.0)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConflictError, match="already exists"):
        incremental_train(folder, good, out=tmp_path / "taken")
    named = Dataset("d", good[0], good[1], ("a", "b", "zebra"), Modality.TABULAR)
    with pytest.raises(DataError, match="zebra"):
        incremental_train(folder, named, old_data=splits.test)


def worker(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgeloop.training.on_device_worker", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)


def test_worker_process_runs_end_to_end_and_prints_one_json_line(
    trained: tuple[Path, Splits], tmp_path: Path
) -> None:
    folder, splits = trained
    x, y = shifted(80, seed=10)
    np.savez(tmp_path / "new.npz", x=x, y=y)
    np.savez(tmp_path / "old.npz", x=splits.test.x, y=splits.test.y)
    seeded_replay(tmp_path / "replay.npz", splits)
    proc = worker(
        "--checkpoint", str(folder), "--data", str(tmp_path / "new.npz"),
        "--old-data", str(tmp_path / "old.npz"), "--replay", str(tmp_path / "replay.npz"),
        "--out", str(tmp_path / "out"), "--epochs", "10", "--lr", "3e-3", "--no-onnx",
        "--max-seconds", "60", "--max-memory-mb", "2000", "--node-id", "node-2",
        "--parent-ref", "blobs-mlp:3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["accepted"] is True and result["lineage"] == "blobs-mlp:3+node-2.1"
    assert result["accuracy_after"] > result["accuracy_before"]
    assert result["peak_rss_mb"] > 0 and result["wall_seconds"] > 0
    assert (tmp_path / "out" / "model.json").is_file()


@pytest.mark.parametrize(
    ("case", "code", "error"),
    [("missing-checkpoint", 4, "NotFoundError"), ("wrong-shape", 3, "DataError"),
     ("bad-labels", 3, "DataError"), ("epochs-0", 2, "ConfigError"),
     ("memory-budget", 2, "ConfigError")],
)  # fmt: skip
def test_worker_bad_input_exits_with_the_error_code_and_no_traceback(
    trained: tuple[Path, Splits], tmp_path: Path, case: str, code: int, error: str
) -> None:
    folder, _ = trained
    x, y = shifted(20, seed=11)
    checkpoint, epochs, budget = str(folder), "1", "4000"
    if case == "missing-checkpoint":
        checkpoint = str(tmp_path / "nowhere")
    elif case == "wrong-shape":
        x = np.zeros((20, 2, 2), np.float32)
    elif case == "bad-labels":
        y = np.full(20, -1)
    elif case == "memory-budget":
        budget = "30"  # MiB: the interpreter with numpy alone is more, so the watchdog fires
    else:
        epochs = "0"
    np.savez(tmp_path / "new.npz", x=x, y=y)
    proc = worker(
        "--checkpoint", checkpoint, "--data", str(tmp_path / "new.npz"),
        "--out", str(tmp_path / "out"), "--epochs", epochs, "--max-memory-mb", budget,
    )  # fmt: skip
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    body = json.loads(proc.stdout.strip())
    assert body["error"] == error and body["exit_code"] == code and body["message"]
    assert case != "memory-budget" or "--max-memory-mb 30" in body["message"]
    assert not (tmp_path / "out").exists()
