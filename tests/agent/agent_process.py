"""An edge agent as a real OS process (``edgeloop agent``), for tests and bench/agent_kills.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_RUN = "import sys, typer; from edgeloop.cli.agent import agent; sys.argv.pop(1); typer.run(agent)"
# Generous deadlines: on a loaded 2-core CI runner (pytest -n 2) an agent's start, enrollment and a
# TUF download plus model load each take seconds, not the fraction of one they take when idle.
WAIT_S = 60.0
ENROLL_S = 90.0


class AgentProcess:
    """``edgeloop agent`` on a free port with ``home``; ``pause_at`` sets the test hook."""

    def __init__(
        self,
        home: Path,
        control: str,
        *,
        enroll_token: str | None = None,
        pause_at: str | None = None,
        poll_s: float = 0.2,
        log: Path | None = None,
    ) -> None:
        self.home = home
        env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_AGENT_PAUSE_AT"}
        if pause_at:
            env["EDGELOOP_AGENT_PAUSE_AT"] = pause_at
        # The `edgeloop agent` command function, run by typer alone (not through the whole
        # `edgeloop` app, so another command group's import problem cannot stop the agent).
        args = [sys.executable, "-c", _RUN, "agent",
                "--control", control, "--port", "0", "--home", str(home),
                "--poll-s", str(poll_s), "--log-level", "warning"]  # fmt: skip
        if enroll_token:
            args += ["--enroll-token", enroll_token]
        self.log = log or home.parent / f"{home.name}-agent.log"
        self._stderr = self.log.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=self._stderr)
        self.ready = self._read_ready()
        self.url = str(self.ready["url"])
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    def _read_ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the process prints one JSON line once serving
        if not line:
            self.proc.wait(timeout=10)
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"agent exited {self.proc.returncode} before serving: {tail}")
        ready: dict[str, Any] = json.loads(line)
        return ready

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = self.http.get("/agent/status").raise_for_status().json()
        return doc

    def predict(self, features: list[float]) -> httpx.Response:
        return self.http.post("/predict", json={"features": features})

    def infer(self, model: str, row: list[float]) -> httpx.Response:
        """Open Inference Protocol v2: one row of FP32 features."""
        body = {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                            "data": row}]}  # fmt: skip
        return self.http.post(f"/v2/models/{model}/infer", json=body)

    def wait_for(self, check: Any, timeout_s: float = WAIT_S, what: str = "condition") -> Any:
        """Poll ``check(status)`` until it returns something truthy; that value."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"agent exited {self.proc.returncode} before {what}: {tail}")
            last = self.status()
            value = check(last)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"agent: no {what} within {timeout_s} s; last status {last}")

    def wait_enrolled(self, timeout_s: float = ENROLL_S) -> dict[str, Any]:
        """The status once the agent enrolled and its first report reached the control plane
        (a deployment selects the nodes enrolled when it is made)."""
        status: dict[str, Any] = self.wait_for(
            lambda s: s if s["node_id"] and s["reports"] else None, timeout_s, "enrollment"
        )
        return status

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.close()

    def close(self) -> None:
        self.http.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def wait_for_file(path: Path, proc: AgentProcess, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.proc.poll() is not None:
            raise RuntimeError(
                f"agent exited {proc.proc.returncode}: {proc.log.read_text()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.02)


def idle_on(revision: int) -> Any:
    """A wait_for check: the updater is idle and has acted on ``revision``."""

    def check(status: dict[str, Any]) -> dict[str, Any] | None:
        done = status["updater"]["state"] == "IDLE" and status["revision"] >= revision
        return status if done else None

    return check
