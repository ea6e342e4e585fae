"""The model zoo: every arch builds, takes its input shape, and refuses the wrong ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeloop.core.errors import ConfigError, ConflictError
from edgeloop.data.dataset import Modality, Task
from edgeloop.training.zoo import (
    ArchConfig,
    ArchSpec,
    build,
    default_arch,
    deployable,
    known_archs,
    register,
)

# (arch, one sample's shape, classes): the input kinds the issue names.
CASES = [
    ("mlp", (20,), 3),
    ("cnn", (1, 8, 8), 10),
    ("ds-cnn", (1, 49, 10), 12),
    ("cnn1d", (6, 100), 4),
    ("autoencoder", (1, 64), 2),
    ("cnn", (3, 2, 2), 2),  # the smallest image the pooling allows
]


@pytest.mark.parametrize(("arch", "shape", "classes"), CASES)
def test_each_arch_maps_a_batch_to_the_right_output_shape(
    arch: str, shape: tuple[int, ...], classes: int
) -> None:
    torch.manual_seed(0)  # the same weights and input on every run, whatever ran before
    config = ArchConfig(arch, shape, classes, width=8)
    module = build(config).eval()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        out = module(x)
        served = deployable(module, config)(x)
    if arch == "autoencoder":
        assert out.shape == (3, *shape)  # a reconstruction of the input
        assert served.shape == (3,)  # one anomaly score per sample
        expected = ((out - x) ** 2).flatten(1).mean(dim=1)
        torch.testing.assert_close(served, expected)
    else:
        assert out.shape == (3, classes)
        assert served.shape == (3, classes)
        torch.testing.assert_close(served.sum(dim=1), torch.ones(3))
        assert torch.equal(served.argmax(dim=1), out.argmax(dim=1))


def test_unknown_arch_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        ArchConfig("resnet152", (1, 8, 8), 10)
    assert "'resnet152'" in err.value.message
    for name in ("mlp", "cnn", "ds-cnn", "cnn1d", "autoencoder"):
        assert name in err.value.message
    assert set(known_archs()) >= {"mlp", "cnn", "ds-cnn", "cnn1d", "autoencoder"}


@pytest.mark.parametrize(
    ("arch", "shape", "suggested"),
    [("cnn", (64,), "mlp"), ("ds-cnn", (6, 100), "cnn1d"), ("cnn1d", (1, 8, 8), "cnn")],
)
def test_a_shape_the_arch_cannot_take_names_the_shape_and_the_arch_that_fits(
    arch: str, shape: tuple[int, ...], suggested: str
) -> None:
    with pytest.raises(ConfigError) as err:
        ArchConfig(arch, shape, 4)
    assert str(shape) in err.value.message
    assert err.value.hint is not None and repr(suggested) in err.value.hint


def test_an_image_too_small_to_pool_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\(1, 1, 8\)"):
        ArchConfig("cnn", (1, 1, 8), 10)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"width": 0}, "width 0"),
        ({"dropout": 1.0}, "dropout 1.0"),
        ({"dropout": float("nan")}, "dropout nan"),
        ({"num_classes": 1}, "num_classes 1"),
        ({"input_shape": (0, 8)}, "(0, 8)"),
        ({"input_shape": ()}, "()"),
    ],
)
def test_bad_sizes_are_config_errors_naming_the_value(kwargs: dict[str, object], bad: str) -> None:
    base: dict[str, object] = {"arch": "mlp", "input_shape": (4,), "num_classes": 3}
    with pytest.raises(ConfigError) as err:
        ArchConfig(**{**base, **kwargs})  # type: ignore[arg-type]
    assert bad in err.value.message


def test_arch_config_round_trips_through_json_dicts() -> None:
    config = ArchConfig("ds-cnn", (1, 49, 10), 12, width=16, dropout=0.2)
    assert ArchConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="input_shape"):
        ArchConfig.from_dict({"arch": "mlp", "num_classes": 3})


def test_default_arch_follows_modality_and_task() -> None:
    assert default_arch(Modality.IMAGE, Task.CLASSIFICATION) == "cnn"
    assert default_arch(Modality.SIGNAL, Task.CLASSIFICATION) == "cnn1d"
    assert default_arch(Modality.TABULAR, Task.CLASSIFICATION) == "mlp"
    for modality in Modality:
        assert default_arch(modality, Task.ANOMALY) == "autoencoder"


def test_registering_a_taken_name_is_a_conflict() -> None:
    spec = ArchSpec("mlp", lambda c: nn.Identity(), Task.CLASSIFICATION, None, "any")
    with pytest.raises(ConflictError, match="'mlp'"):
        register(spec)


def test_deployable_refuses_a_module_that_is_not_the_autoencoder() -> None:
    config = ArchConfig("autoencoder", (1, 64), 2)
    with pytest.raises(ConfigError, match="Sequential"):
        deployable(build(ArchConfig("mlp", (64,), 2)), config)
