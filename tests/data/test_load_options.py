"""The loaders' options on the command line: CSV label column, JSONL keys, image colour and size;
conversions said out loud; empty sets refused at load; `train --clean`.

Before, these options were Python-only, RGB images were made grey without a word, and an empty
NPZ passed `data show`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.data.samples import write_png, write_text
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.errors import ConfigError, DataError
from edgeloop.data import ColorMode, LoadOptions, load_data
from edgeloop.data.options import parse_size

runner = CliRunner()


@pytest.fixture
def rgb_folder(tmp_path: Path) -> Path:
    """Two classes of 6x4 RGB images (red, blue), 4 each."""
    root = tmp_path / "photos"
    for k, name in enumerate(("red", "blue")):
        for i in range(4):
            pixels = np.zeros((4, 6, 3))
            pixels[..., 0 if k == 0 else 2] = 200 + i
            write_png(root / name / f"{i}.png", pixels)
    return root


def _show(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["data", "show", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    body: dict[str, object] = json.loads(result.stdout)
    return body


def test_rgb_images_made_grey_are_said_so_and_rgb_is_kept_on_request(rgb_folder: Path) -> None:
    grey = load_data(rgb_folder)
    assert grey.sample_shape == (1, 4, 6)
    assert grey.notes == ("8 of 8 images were converted to grey (one channel); pass --color rgb "
                          "to keep colour",)  # fmt: skip
    body = _show(str(rgb_folder), "--color", "rgb")
    assert body["sample_shape"] == [3, 4, 6] and body["notes"] == []
    body = _show(str(rgb_folder), "--color", "rgb", "--image-size", "3x2")
    assert body["sample_shape"] == [3, 2, 3]
    assert body["notes"] == ["8 of 8 images were resized to 3x2 (bicubic)"]


def test_csv_label_column_and_jsonl_keys_come_from_flags(tmp_path: Path) -> None:
    csv = write_text(tmp_path / "t.csv", "a,b,target\n1,2,x\n3,4,y\n5,6,x\n")
    with pytest.raises(DataError, match="label"):
        load_data(csv)
    assert _show(str(csv), "--label-column", "target")["classes"] == ["x", "y"]
    lines = [json.dumps({"v": [i, i + 1], "cls": i % 2}) for i in range(4)]
    jsonl = write_text(tmp_path / "t.jsonl", "\n".join(lines) + "\n")
    body = _show(str(jsonl), "--features-key", "v", "--label-key", "cls")
    assert body["samples"] == 4 and body["sample_shape"] == [2]


def test_an_option_for_another_kind_of_data_is_refused(tmp_path: Path) -> None:
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((3, 2), np.float32), y=np.arange(3))
    with pytest.raises(ConfigError, match="--label-column does not apply"):
        load_data(npz, LoadOptions(label_column="target"))
    with pytest.raises(ConfigError, match="--color does not apply"):
        load_data("digits", LoadOptions(color=ColorMode.RGB))
    with pytest.raises(ConfigError, match="not WIDTHxHEIGHT"):
        parse_size("big")
    assert parse_size("32") == (32, 32)


def test_an_empty_set_is_refused_at_load(tmp_path: Path) -> None:
    npz = tmp_path / "empty.npz"
    np.savez(npz, x=np.zeros((0, 4), np.float32), y=np.zeros((0,), np.int64))
    result = runner.invoke(app, ["data", "show", str(npz)])
    assert isinstance(result.exception, DataError)
    assert "holds no samples" in result.exception.message


def test_train_cleans_on_request_and_records_how_it_read_the_data(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    rows = [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(60)]
    csv = write_text(tmp_path / "t.csv", "a,b,kind\n" + "\n".join(rows + rows[:10]) + "\n")
    out = tmp_path / "model"
    args = ["train", "--data", str(csv), "--label-column", "kind", "--clean", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--out", str(out), "--no-progress", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "cleaned t: 70 -> " in result.stderr
    config = json.loads((out / "model.json").read_text())
    assert config["clean"] is True and config["data_options"] == {"label_column": "kind"}
    exported = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "m.onnx")])
    assert exported.exit_code == 0, exported.output  # the recorded label column is used again
