"""What is served: files, model folders and repository roots; variants; every bad layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.serving.models import add_version, make_repository
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError
from edgeloop.serving.repository import Origin, scan


def test_a_file_is_a_model_named_by_its_stem_in_version_1(linear: Path) -> None:
    (origin,) = scan([linear])
    assert origin == Origin("linear", linear)
    (source,) = origin.scan()
    assert (source.name, source.version, source.variant) == ("linear", "1", "default")
    assert source.stamp[0] == linear.stat().st_size


def test_name_renames_a_single_model(linear: Path) -> None:
    (origin,) = scan([linear], name="prod-model")
    assert origin.name == "prod-model"


def test_a_model_folder_serves_every_version_and_its_variants(tmp_path: Path) -> None:
    model = make_repository(tmp_path, "clf", {1: 1, 3: 3})
    make_linear_onnx(model / "3" / "model.int8.onnx", seed=4)
    (model / "3" / "notes.txt").write_text("not a model")
    (model / "latest").mkdir()  # not a version: ignored
    (origin,) = scan([model])
    found = sorted((s.version, s.variant) for s in origin.scan())
    assert origin.name == "clf"
    assert found == [("1", "default"), ("3", "default"), ("3", "int8")]


def test_a_repository_root_serves_each_model_folder(tmp_path: Path) -> None:
    make_repository(tmp_path / "repo", "a", {1: 1})
    make_repository(tmp_path / "repo", "b", {2: 2})
    origins = scan([tmp_path / "repo"])
    assert [o.name for o in origins] == ["a", "b"]


def test_a_new_version_appears_on_rescan_and_a_changed_file_gets_a_new_stamp(
    tmp_path: Path,
) -> None:
    model = make_repository(tmp_path, "clf", {1: 1})
    (origin,) = scan([model])
    before = {s.version: s.stamp for s in origin.scan()}
    add_version(model, 2, seed=5)
    path = model / "1" / "model.onnx"
    make_linear_onnx(path, seed=9, features=6)
    os.utime(path, ns=(before["1"][1] + 10**9, before["1"][1] + 10**9))
    after = {s.version: s.stamp for s in origin.scan()}
    assert set(after) == {"1", "2"} and after["1"] != before["1"]


def test_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nothing.onnx' does not exist"):
        scan([tmp_path / "nothing.onnx"])


def test_a_folder_without_the_layout_is_not_found_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(NotFoundError, match="empty' holds no model in the layout MODEL/VERSION"):
        scan([tmp_path / "empty"])


def test_name_with_several_models_is_a_config_error(tmp_path: Path) -> None:
    make_repository(tmp_path / "repo", "a", {1: 1})
    make_repository(tmp_path / "repo", "b", {1: 1})
    with pytest.raises(ConfigError, match="--name 'x' was given, but the paths hold 2 models"):
        scan([tmp_path / "repo"], name="x")


def test_two_models_of_one_name_conflict(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_linear_onnx(tmp_path / "a" / "m.onnx")
    b = make_linear_onnx(tmp_path / "b" / "m.onnx")
    with pytest.raises(ConflictError, match="two models are named 'm'"):
        scan([a, b])


def test_an_invalid_model_name_says_how_to_fix_it(tmp_path: Path) -> None:
    bad = make_linear_onnx(tmp_path / "_hidden.onnx")
    with pytest.raises(ConfigError, match="would serve a model named '_hidden'") as info:
        scan([bad])
    assert "--name" in (info.value.hint or "")


def test_a_model_folder_that_lost_its_versions_is_not_found_on_rescan(tmp_path: Path) -> None:
    model = make_repository(tmp_path, "clf", {1: 1})
    (origin,) = scan([model])
    (model / "1" / "model.onnx").unlink()
    with pytest.raises(NotFoundError, match="holds no version"):
        origin.scan()
