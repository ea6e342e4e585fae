"""distill: a smaller student, trained beside the same student without the teacher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.optimize.torch_parents import digits_splits, one_torch_thread, trained_parent

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Splits
from edgeloop.formats.onnx_info import inspect_onnx
from edgeloop.formats.parity import onnx_predictor
from edgeloop.optimize import ModelSource, Variant, create

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def splits() -> Splits:
    return digits_splits()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, splits: Splits) -> ModelSource:
    return trained_parent(tmp_path_factory.mktemp("teacher"), splits, width=8, epochs=6)


@pytest.fixture(scope="module")
def distilled(
    tmp_path_factory: pytest.TempPathFactory, teacher: ModelSource, splits: Splits
) -> Variant:
    out = tmp_path_factory.mktemp("student") / "student.onnx"
    return create("distill", epochs=3).fit(splits).apply(teacher, out)


def test_student_has_fewer_parameters(distilled: Variant, teacher: ModelSource) -> None:
    extra = distilled.extra
    assert extra["student"]["parameters"] < extra["teacher"]["parameters"] / 3
    assert extra["student"]["arch"]["width"] == 4
    assert distilled.path.stat().st_size < teacher.onnx.stat().st_size


def test_variant_records_the_no_teacher_baseline(distilled: Variant, splits: Splits) -> None:
    base = distilled.extra["no_teacher"]
    assert base["arch"] == distilled.extra["student"]["arch"]
    assert base["parameters"] == distilled.extra["student"]["parameters"]
    assert 0.0 <= base["val_accuracy"] <= 1.0
    assert base["epochs_run"] >= 1
    baseline = Path(base["output"])
    assert baseline.is_file() and baseline.name == "student.no-teacher.onnx"
    out = onnx_predictor(baseline)(splits.test.x)
    assert out.shape == (len(splits.test), 10)
    # Two different trainings: the files differ.
    assert not np.allclose(out, onnx_predictor(distilled.path)(splits.test.x))


def test_student_keeps_the_teacher_signature(distilled: Variant, teacher: ModelSource) -> None:
    a, b = inspect_onnx(teacher.onnx), inspect_onnx(distilled.path)
    assert [t.to_dict() for t in a.inputs] == [t.to_dict() for t in b.inputs]
    assert distilled.checkpoint is not None and (distilled.checkpoint / "model.pt").is_file()


def test_alpha_zero_is_plain_cross_entropy_and_runs_are_repeatable(splits: Splits) -> None:
    from edgeloop.optimize.distill import train_student
    from edgeloop.training import ArchConfig, FitConfig

    arch = ArchConfig("mlp", (1, 8, 8), 10, width=2)
    config = FitConfig(epochs=2, seed=3)
    fake_teacher = torch.randn(len(splits.train), 10)
    a, _, _ = train_student(arch, splits, config, None, temperature=4.0, alpha=0.0)
    b, _, _ = train_student(arch, splits, config, fake_teacher, temperature=4.0, alpha=0.0)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name


def test_loss_is_hintons() -> None:
    from torch.nn import functional as F  # noqa: N812

    from edgeloop.optimize.distill import distillation_loss

    torch.manual_seed(0)
    logits, teacher = torch.randn(8, 5), torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    hard = F.cross_entropy(logits, labels)
    # Student equal to teacher: the soft term is 0, only (1 - alpha) of the hard term is left.
    same = distillation_loss(logits, labels, logits.clone(), 2.0, 0.25)
    assert same.item() == pytest.approx(0.75 * hard.item(), rel=1e-5)
    t = 3.0
    kl = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher / t, 1), reduction="batchmean")
    mixed = distillation_loss(logits, labels, teacher, t, 0.5)
    assert mixed.item() == pytest.approx(0.5 * t * t * kl.item() + 0.5 * hard.item(), rel=1e-5)


def test_a_student_that_is_not_smaller_is_refused(
    teacher: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="not fewer than the teacher") as err:
        create("distill", width_ratio=0.99, epochs=1).fit(splits).apply(
            teacher, tmp_path / "s.onnx"
        )
    assert err.value.hint is not None and "width_ratio" in err.value.hint


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"temperature": 0}, "temperature 0"),
        ({"temperature": -2.0}, "temperature -2.0"),
        ({"alpha": 2}, "alpha 2"),
        ({"alpha": -0.1}, "alpha -0.1"),
        ({"width_ratio": 1.5}, "width_ratio 1.5"),
        ({"student_arch": "autoencoder"}, "student_arch 'autoencoder'"),
        ({"epochs": 0}, "epochs 0"),
    ],
)
def test_bad_params_are_refused(params: dict[str, object], bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        create("distill", **params)
    assert bad in err.value.message
    assert "distill" in err.value.message


def test_missing_checkpoint_is_refused(
    teacher: ModelSource, splits: Splits, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="'distill' changes weights"):
        create("distill").fit(splits).apply(ModelSource(teacher.onnx), tmp_path / "s.onnx")
    assert not (tmp_path / "s.onnx").exists()
