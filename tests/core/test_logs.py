"""Servers log without closing the process's other log handlers (core/logs.py)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeloop.cli.app import app
from edgeloop.core.logs import server_logging


class _Owning(logging.StreamHandler):  # type: ignore[type-arg]
    """Closes its stream when closed, as absl's handler does."""

    def close(self) -> None:
        self.stream.close()
        super().close()


def test_a_server_started_in_process_leaves_other_log_handlers_open(tmp_path: Path) -> None:
    # uvicorn's default log config (dictConfig) closed every installed handler: absl's, which
    # OpenVINO installs, then closed pytest's captured stderr and crashed the test run.
    stream = io.StringIO()
    handler = _Owning(stream)
    owner = logging.getLogger("edgeloop-test-owner")
    owner.addHandler(handler)
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(bytes(range(256)) * 4)
    try:
        CliRunner().invoke(app, ["serve", str(fake), "--port", "0"])
        assert not stream.closed
        assert handler in owner.handlers
    finally:
        owner.removeHandler(handler)


def test_uvicorn_records_go_to_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    server_logging()
    server_logging()  # idempotent: one handler
    logger = logging.getLogger("uvicorn")
    assert sum(type(h).__name__ == "_CurrentStderr" for h in logger.handlers) == 1
    logging.getLogger("uvicorn.error").warning("the port is taken")
    assert "WARNING:     the port is taken" in capsys.readouterr().err
