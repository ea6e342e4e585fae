"""``edgeloop serve``'s flags: routing flags, and errors raised before anything is served."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgeloop.cli.serve import routing_from_flags, serve
from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.serving import Routing, Split

app = typer.Typer()
app.command()(serve)


def test_routing_flags_combine_split_and_shadow_per_model() -> None:
    routing = routing_from_flags(["cnn=1:90,2:10"], ["cnn=3", "kws=2"])
    assert routing == {
        "cnn": Routing(Split((("1", 90.0), ("2", 10.0))), "3"),
        "kws": Routing(None, "2"),
    }


@pytest.mark.parametrize(
    ("ab", "shadow", "message"),
    [
        (["cnn=1:1", "cnn=2:1"], [], "--ab names model 'cnn' twice"),
        ([], ["cnn=1", "cnn=2"], "--shadow names model 'cnn' twice"),
        (["cnn"], [], "--ab 'cnn' has no '='"),
    ],
)
def test_bad_routing_flags_are_config_errors(
    ab: list[str], shadow: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        routing_from_flags(ab, shadow)


def test_a_missing_model_is_not_found_before_anything_listens(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [str(tmp_path / "none.onnx"), "--port", "0"])
    assert isinstance(result.exception, NotFoundError)
    assert "none.onnx' does not exist" in result.exception.message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-batch", "0"], "max_batch=0 \\(expected >= 1\\)"),
        (["--timeout", "0"], "timeout_s=0.0 \\(expected > 0\\)"),
        (["--max-body-mb", "-1"], "--max-body-mb -1.0 must be positive"),
        (["--ab", "linear=1:1", "--ab", "linear=1:2"], "--ab names model 'linear' twice"),
    ],
)
def test_bad_settings_are_config_errors(linear: Path, flags: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [str(linear), "--port", "0", *flags])
    assert isinstance(result.exception, ConfigError), result.output
    assert re.search(message, result.exception.message)


def test_routing_for_a_model_that_is_not_served_is_refused(linear: Path) -> None:
    result = CliRunner().invoke(app, [str(linear), "--port", "0", "--shadow", "other=2"])
    assert isinstance(result.exception, ConfigError)
    assert "routing names model(s) 'other', which are not served" in result.exception.message
