"""prune-structured: channels are really removed, the result reloads, bad input is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tests.optimize.torch_parents import digits_splits, one_torch_thread, trained_parent

from edgeloop.core.errors import ConfigError, UntrustedArtifactError
from edgeloop.data.dataset import Splits
from edgeloop.formats.parity import onnx_predictor
from edgeloop.optimize import ModelSource, Variant, create
from edgeloop.optimize.pruned_checkpoint import (
    LayerKind,
    LayerShape,
    layer_shapes,
    load_module,
    rebuild,
    save_module,
)

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def splits() -> Splits:
    return digits_splits()


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory, splits: Splits) -> ModelSource:
    return trained_parent(tmp_path_factory.mktemp("parent"), splits, width=8)


@pytest.fixture(scope="module")
def halved(
    tmp_path_factory: pytest.TempPathFactory, parent: ModelSource, splits: Splits
) -> Variant:
    out = tmp_path_factory.mktemp("pruned") / "half.onnx"
    return create("prune-structured", ratio=0.5, epochs=1).fit(splits).apply(parent, out)


def conv_out_channels(path: Path) -> list[int]:
    """Output channels of every Conv node of the ONNX file, in graph order."""
    model = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [weights[n.input[1]].shape[0] for n in model.graph.node if n.op_type == "Conv"]


def onnx_parameters(path: Path) -> int:
    return sum(int(np.prod(i.dims)) for i in onnx.load(str(path)).graph.initializer)


def test_exported_convs_have_half_the_channels(parent: ModelSource, halved: Variant) -> None:
    before, after = conv_out_channels(parent.onnx), conv_out_channels(halved.path)
    assert before == [8, 16, 16]
    assert after == [c // 2 for c in before]


def test_parameter_count_matches_a_half_width_net(halved: Variant, parent: ModelSource) -> None:
    from edgeloop.training import ArchConfig, build
    from edgeloop.training.zoo import parameter_count

    # cnn at width 4 has exactly the layer widths of cnn at width 8 with half the channels gone.
    half = parameter_count(build(ArchConfig("cnn", (1, 8, 8), 10, width=4)))
    assert halved.extra["parameters_after"] == half
    assert halved.extra["parameters_before"] > 3.5 * half
    assert onnx_parameters(halved.path) < 0.3 * onnx_parameters(parent.onnx)
    assert halved.extra["macs_after"] < 0.3 * halved.extra["macs_before"]
    assert halved.extra["channels_after"]["13"] == 10  # the output layer keeps its width


def test_pruned_checkpoint_reloads_with_identical_outputs(halved: Variant, splits: Splits) -> None:
    from edgeloop.training import deployable

    assert halved.checkpoint is not None
    module, arch = load_module(halved.checkpoint)
    assert [s.outputs for s in layer_shapes(module) if s.kind is LayerKind.CONV2D] == [4, 8, 8]
    x = splits.test.x
    with torch.no_grad():
        reloaded = deployable(module, arch)(torch.from_numpy(x)).numpy()
    exported = onnx_predictor(halved.path)(x)
    assert np.max(np.abs(reloaded - exported)) < 1e-5
    assert (reloaded.argmax(1) == exported.argmax(1)).all()


def test_variant_records_settings_and_parity(halved: Variant, splits: Splits) -> None:
    assert halved.settings["ratio"] == 0.5
    assert halved.tools["torch-pruning"] != "not installed"
    assert halved.parity.samples == len(splits.test)
    assert halved.parity.top1_agreement is not None


def test_swapped_weights_are_refused(halved: Variant, tmp_path: Path) -> None:
    import shutil

    assert halved.checkpoint is not None
    copy = Path(shutil.copytree(halved.checkpoint, tmp_path / "ckpt"))
    state = torch.load(copy / "model.pt", weights_only=True)
    state["0.weight"] = torch.zeros_like(state["0.weight"])
    torch.save(state, copy / "model.pt")
    with pytest.raises(UntrustedArtifactError, match="sha256"):
        load_module(copy)


def test_layers_from_another_arch_are_refused(halved: Variant) -> None:
    from edgeloop.training import ArchConfig

    assert halved.checkpoint is not None
    layers = json.loads((halved.checkpoint / "model.json").read_text())["layers"]
    shapes = tuple(LayerShape.from_dict(d) for d in layers)
    with pytest.raises(ConfigError, match="layer '0' of arch 'mlp' is a Flatten"):
        rebuild(ArchConfig("mlp", (1, 8, 8), 10, width=8), shapes)


def test_unpruned_module_is_saved_as_a_plain_checkpoint(tmp_path: Path) -> None:
    from edgeloop.training import ArchConfig, build, load_checkpoint

    arch = ArchConfig("mlp", (4,), 3, width=2)
    folder = save_module(tmp_path / "plain", build(arch), arch)
    assert "layers" not in json.loads((folder / "model.json").read_text())
    assert load_checkpoint(folder)[1] == arch


@pytest.mark.parametrize("ratio", [1.5, 0.0, 1.0, -0.2, float("nan"), "half"])
def test_bad_ratio_is_refused(ratio: object) -> None:
    with pytest.raises(ConfigError, match=r"ratio .* out of range") as err:
        create("prune-structured", ratio=ratio)
    assert repr(ratio) in err.value.message


def test_negative_epochs_are_refused() -> None:
    with pytest.raises(ConfigError, match="epochs -1"):
        create("prune-structured", epochs=-1)


def test_missing_checkpoint_is_refused(parent: ModelSource, splits: Splits, tmp_path: Path) -> None:
    pruner = create("prune-structured", epochs=0).fit(splits)
    with pytest.raises(ConfigError, match="needs the torch checkpoint") as err:
        pruner.apply(ModelSource(parent.onnx), tmp_path / "v.onnx")
    assert "prune-structured" in err.value.message
    assert err.value.hint is not None and "--checkpoint" in err.value.hint
    assert not (tmp_path / "v.onnx").exists()


def test_data_of_another_shape_is_refused(parent: ModelSource, tmp_path: Path) -> None:
    from edgeloop.data.dataset import Dataset, Modality

    rng = np.random.default_rng(0)
    ds = Dataset(
        "wide",
        rng.random((30, 1, 4, 4), dtype=np.float32),
        np.arange(30) % 10,
        tuple(str(i) for i in range(10)),
        Modality.IMAGE,
    )
    wrong = Splits(ds, ds, ds, seed=0)
    pruner = create("prune-structured", epochs=0).fit(wrong)
    with pytest.raises(ConfigError, match=r"\(1, 4, 4\)"):
        pruner.apply(parent, tmp_path / "v.onnx")
