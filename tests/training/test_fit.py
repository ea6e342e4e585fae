"""fit: determinism, early stopping, data checks, and the accuracy the quickstart promises."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data.dataset import Dataset, Modality, Splits, Task
from edgeloop.training.fit import FitConfig, Optimizer, fit
from edgeloop.training.metrics import evaluate
from edgeloop.training.zoo import ArchConfig


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"epochs": 0}, "epochs 0"),
        ({"batch_size": -2}, "batch_size -2"),
        ({"patience": 0}, "patience 0"),
        ({"seed": -1}, "seed -1"),
        ({"lr": 0.0}, "learning rate 0.0"),
        ({"lr": float("nan")}, "learning rate nan"),
        ({"weight_decay": -0.1}, "weight_decay -0.1"),
        ({"min_delta": float("inf")}, "min_delta inf"),
        ({"momentum": 1.0}, "momentum 1.0"),
        ({"optimizer": "rmsprop"}, "'rmsprop'"),
        ({"epochs": True}, "epochs True"),
    ],
)
def test_bad_fit_config_is_a_config_error_naming_the_value(
    kwargs: dict[str, object], bad: str
) -> None:
    with pytest.raises(ConfigError) as err:
        FitConfig(**kwargs)  # type: ignore[arg-type]
    assert bad in err.value.message


def test_fit_config_takes_the_optimizer_by_name_and_round_trips() -> None:
    config = FitConfig.from_dict({"optimizer": "sgd", "lr": 0.05, "epochs": 3})
    assert config.optimizer is Optimizer.SGD
    assert FitConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="'nesterov'"):
        FitConfig.from_dict({"epochs": 3, "nesterov": True})
    with pytest.raises(ConfigError, match="epochs 'x'"):
        FitConfig.from_dict({"epochs": "x"})


def _state(splits: Splits, seed: int) -> dict[str, torch.Tensor]:
    arch = ArchConfig("mlp", splits.train.sample_shape, splits.train.num_classes, width=8)
    result = fit(arch, splits, FitConfig(epochs=3, batch_size=16, seed=seed), progress=False)
    return result.module.state_dict()


def test_same_seed_gives_identical_weights_and_leaves_the_global_rng_alone(
    blob_splits: Splits,
) -> None:
    before = torch.random.get_rng_state()
    first, second = _state(blob_splits, seed=7), _state(blob_splits, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = _state(blob_splits, seed=8)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_early_stopping_restores_the_best_epoch_when_val_loss_rises(
    blob_splits: Splits,
) -> None:
    # Val holds the same kind of samples with labels rotated: the better the net fits the
    # training labels, the worse its val loss, so epoch 1 is the best and patience 2 ends at 3.
    val = blob_splits.val
    rotated = val.with_arrays(val.x, (val.y + 1) % val.num_classes, name="val")
    splits = Splits(blob_splits.train, rotated, blob_splits.test, seed=0)
    arch = ArchConfig("mlp", (4,), 3, width=8)
    result = fit(arch, splits, FitConfig(epochs=20, patience=2, lr=1e-2), progress=False)
    losses = [r.val_loss for r in result.history]
    assert result.stopped_early
    assert result.best_epoch == 1 and result.epochs_run == 3
    assert losses[1] > losses[0] and losses[2] > losses[0]
    # The returned weights are epoch 1's: its val accuracy, not the last epoch's.
    assert evaluate(result.module, rotated).accuracy == result.history[0].val_metric
    assert not result.module.training


def test_fit_reports_history_and_test_metrics(blob_splits: Splits) -> None:
    arch = ArchConfig("mlp", (4,), 3, width=8)
    result = fit(arch, blob_splits, FitConfig(epochs=4, patience=10), progress=False)
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert not result.stopped_early
    assert result.test_metrics.split == "test" and result.test_metrics.samples == 15
    assert result.test_metrics.accuracy is not None and result.test_metrics.accuracy > 0.9
    assert result.threads == torch.get_num_threads()
    assert result.train_samples == 60
    assert result.summary()["test_accuracy"] == result.test_metrics.accuracy
    assert result.to_dict()["history"][0]["epoch"] == 1


def test_progress_bar_goes_to_stderr_only_when_asked(
    blob_splits: Splits, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = ArchConfig("mlp", (4,), 3, width=8)
    fit(arch, blob_splits, FitConfig(epochs=2), progress=False)
    quiet = capsys.readouterr()
    fit(arch, blob_splits, FitConfig(epochs=2), progress=True)
    loud = capsys.readouterr()
    assert quiet.out == quiet.err == "" and loud.out == ""
    assert "train mlp" in loud.err


def test_a_given_module_is_fine_tuned_in_place(blob_splits: Splits) -> None:
    arch = ArchConfig("mlp", (4,), 3, width=8)
    first = fit(arch, blob_splits, FitConfig(epochs=1), progress=False)
    again = fit(arch, blob_splits, FitConfig(epochs=1), progress=False, module=first.module)
    assert again.module is first.module


def test_data_that_does_not_fit_the_arch_is_refused(
    blob_splits: Splits, sine_splits: Splits
) -> None:
    config = FitConfig(epochs=1)
    with pytest.raises(ConfigError, match=r"\(4,\)"):
        fit(ArchConfig("mlp", (5,), 3), blob_splits, config, progress=False)
    with pytest.raises(ConfigError, match="3 classes"):
        fit(ArchConfig("mlp", (4,), 4), blob_splits, config, progress=False)
    with pytest.raises(ConfigError, match="classification task"):
        fit(ArchConfig("autoencoder", (4,), 3), blob_splits, config, progress=False)
    empty = blob_splits.val.subset(np.arange(0), "val")
    with pytest.raises(DataError, match="'val' is empty"):
        fit(
            ArchConfig("mlp", (4,), 3),
            Splits(blob_splits.train, empty, blob_splits.test, 0),
            config,
            progress=False,
        )
    assert sine_splits.train.task.value == "anomaly"


def test_nan_in_the_data_is_a_data_error_naming_the_split(blob_splits: Splits) -> None:
    x = blob_splits.test.x.copy()
    x[2, 1] = np.nan
    test = blob_splits.test.with_arrays(x, blob_splits.test.y, name="test")
    splits = Splits(blob_splits.train, blob_splits.val, test, seed=0)
    with pytest.raises(DataError, match="'test' holds 1 NaN"):
        fit(ArchConfig("mlp", (4,), 3), splits, FitConfig(epochs=1), progress=False)


def test_a_diverging_loss_is_reported_with_the_learning_rate(blob_splits: Splits) -> None:
    train = blob_splits.train
    # Finite but near float32's limit: the first layer's sums overflow and the loss is NaN.
    huge = train.with_arrays(np.full_like(train.x, 3e38), train.y, name="train")
    splits = Splits(huge, blob_splits.val, blob_splits.test, seed=0)
    with pytest.raises(ConfigError, match="diverged at epoch 1") as err:
        fit(ArchConfig("mlp", (4,), 3), splits, FitConfig(epochs=2, lr=0.5), progress=False)
    assert "lr 0.5" in err.value.message


def test_autoencoder_trained_on_normal_windows_ranks_anomalies_first(
    sine_splits: Splits,
) -> None:
    arch = ArchConfig("autoencoder", (1, 64), 2, width=16)
    result = fit(arch, sine_splits, FitConfig(epochs=40, patience=40), progress=False)
    normal_train = int((sine_splits.train.y == 0).sum())
    assert result.train_samples == normal_train  # anomalies never reach the training loss
    assert result.test_metrics.roc_auc is not None and result.test_metrics.roc_auc > 0.9
    assert result.test_metrics.accuracy is None and result.test_metrics.note
    assert all(r.val_metric is not None for r in result.history)


@pytest.mark.slow  # 4-6 s on an idle 2-core machine, up to ~30 s while other suites run
def test_cnn_reaches_97_percent_on_digits(digits_splits: Splits) -> None:
    arch = ArchConfig("cnn", (1, 8, 8), 10)
    start = time.perf_counter()
    result = fit(arch, digits_splits, FitConfig(seed=0), progress=False)
    wall = time.perf_counter() - start
    acc = result.test_metrics.accuracy
    print(
        f"digits cnn: test accuracy {acc:.4f} on {result.test_metrics.samples} samples, "
        f"{result.epochs_run} epochs (best {result.best_epoch}), "
        f"train {result.train_seconds:.1f} s, wall {wall:.1f} s, {result.threads} threads"
    )
    assert acc is not None and acc >= 0.97
    assert result.test_metrics.macro_f1 is not None and result.test_metrics.macro_f1 >= 0.97


@pytest.mark.parametrize(
    ("arch", "shape", "task"),
    [
        ("ds-cnn", (1, 49, 10), Task.CLASSIFICATION),
        ("cnn1d", (6, 100), Task.CLASSIFICATION),
        ("cnn", (1, 8, 8), Task.CLASSIFICATION),
        ("autoencoder", (1, 64), Task.ANOMALY),
    ],
)
def test_every_arch_trains_deterministically_on_its_input_kind(
    arch: str, shape: tuple[int, ...], task: Task
) -> None:
    # Random inputs: this checks the loop runs every arch's ops (backward included) under
    # torch.use_deterministic_algorithms and repeats exactly, not what the net learns.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, *shape)).astype(np.float32)
    y = (np.arange(30) % 2).astype(np.int64)
    ds = Dataset("rand", x, y, ("a", "b"), Modality.SIGNAL, task=task)
    idx = np.arange(30)
    splits = Splits(ds.subset(idx[:20]), ds.subset(idx[20:25]), ds.subset(idx[25:]), seed=0)
    config = ArchConfig(arch, shape, 2, width=8)
    runs = [fit(config, splits, FitConfig(epochs=2, batch_size=8), progress=False) for _ in "ab"]
    losses = [[(e.train_loss, e.val_loss) for e in r.history] for r in runs]
    assert len(losses[0]) == 2 and np.isfinite(losses[0]).all()
    assert losses[0] == losses[1]
