"""The agent as a real OS process against the control plane's node API on a real port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tests.agent.agent_process import WAIT_S, AgentProcess, idle_on
from tests.agent.fleet_stub import ENROLL_TOKEN, ControlStub, publish


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        time.sleep(0.02)


def expected(model: Path, row: list[float]) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.asarray([row], dtype=np.float32)})[0]
    return np.asarray(out[0])


ROW = [0.5, -1.0, 2.0, 0.25]


def served_version(agent: AgentProcess, models: dict[int, Path]) -> int:
    """Which model version answered (by its outputs: each version has its own weights)."""
    answer = agent.infer("linear", ROW)
    assert answer.status_code == 200, answer.text
    got = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32)
    for version, path in models.items():
        if np.allclose(got, expected(path, ROW), atol=1e-5):
            assert answer.json()["model_version"] == str(version)
            return version
    raise AssertionError(f"the answer matches no model version: {answer.text}")


def test_enroll_update_serve_and_restart_without_torch(
    tmp_path: Path, stub: ControlStub, models: dict[int, Path]
) -> None:
    publish(stub.repo, models[1], 1, version=1)
    stub.set_desired(1)
    agent = AgentProcess(tmp_path / "node", stub.url, enroll_token=ENROLL_TOKEN)
    try:
        status = agent.wait_for(idle_on(1), what="revision 1 committed")
        assert status["updater"]["outcome"] == "committed"
        assert status["torch_imported"] is False
        assert status["active"]["version"] == 1 and status["self_test"]["passed"] is True
        assert served_version(agent, models) == 1
        identity = agent.home / "agent" / "identity.json"
        assert identity.stat().st_mode & 0o777 == 0o600
        report = agent.wait_for(lambda s: stub.last_report(), what="a report")
        assert {
            "revision",
            "updater",
            "active",
            "previous",
            "self_test",
            "health",
            "events",
        } <= set(report)
    finally:
        agent.stop()
    again = AgentProcess(tmp_path / "node", stub.url)  # no token: it must not enroll again
    try:
        assert again.ready["active"]["version"] == 1 and again.ready["self_test"]["passed"]
        assert served_version(again, models) == 1
        assert stub.enrollments == 1
    finally:
        again.stop()


def test_swap_under_load_drops_no_request(
    tmp_path: Path, stub: ControlStub, models: dict[int, Path]
) -> None:
    publish(stub.repo, models[1], 1, version=1)
    stub.set_desired(1)
    agent = AgentProcess(tmp_path / "node", stub.url, enroll_token=ENROLL_TOKEN)
    answers: list[int] = []
    stop = threading.Event()

    def load() -> None:
        import httpx

        with httpx.Client(base_url=agent.url, timeout=10) as client:
            while not stop.is_set():
                answers.append(client.post("/predict", json={"features": ROW}).status_code)

    try:
        agent.wait_for(idle_on(1), what="revision 1")
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        # The load is flowing before the swap starts and still flowing after it ended (however
        # fast this machine answers), so the swap happened under it.
        _wait_until(lambda: len(answers) >= 5, "load before the swap")
        publish(stub.repo, models[2], 2, version=2)
        stub.set_desired(2)
        agent.wait_for(idle_on(2), what="revision 2")
        swapped = len(answers)
        _wait_until(lambda: len(answers) >= swapped + 5, "load after the swap")
        stop.set()
        worker.join(timeout=15)
        assert served_version(agent, models) == 2
    finally:
        stop.set()
        agent.stop()
    assert len(answers) > 10 and set(answers) == {200}, f"{len(answers)} answers: {set(answers)}"


def test_health_window_breach_rolls_back(
    tmp_path: Path, stub: ControlStub, models: dict[int, Path]
) -> None:
    publish(stub.repo, models[1], 1, version=1)
    stub.set_desired(1)
    agent = AgentProcess(tmp_path / "node", stub.url, enroll_token=ENROLL_TOKEN)
    stop = threading.Event()

    sent: list[int] = []

    def load() -> None:
        import httpx

        with httpx.Client(base_url=agent.url, timeout=10) as client:
            while not stop.is_set():
                sent.append(client.post("/predict", json={"features": ROW}).status_code)

    try:
        agent.wait_for(idle_on(1), what="revision 1")
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        _wait_until(lambda: len(sent) >= 5, "load before the update")  # the guard needs requests
        # A guard no real request can meet: p99 under a nanosecond, measured by the server.
        publish(stub.repo, models[2], 2, version=2, watch_s=1.5,
                guard={"max_p99_ms": 1e-6, "min_requests": 1})  # fmt: skip
        stub.set_desired(2)
        status = agent.wait_for(idle_on(2), what="revision 2 acted on")
        stop.set()
        worker.join(timeout=15)
        assert status["updater"]["outcome"] == "rolled_back"
        assert "health window breached: p99" in status["updater"]["error"]
        assert status["active"]["version"] == 1
        assert served_version(agent, models) == 1
    finally:
        stop.set()
        agent.stop()


def test_control_plane_down_keeps_serving(
    tmp_path: Path, stub: ControlStub, models: dict[int, Path]
) -> None:
    publish(stub.repo, models[1], 1, version=1)
    stub.set_desired(1)
    agent = AgentProcess(tmp_path / "node", stub.url, enroll_token=ENROLL_TOKEN)
    try:
        agent.wait_for(idle_on(1), what="revision 1")
        stub.down = True
        agent.wait_for(lambda s: s["updater"]["error"] and "503" in s["updater"]["error"],
                       what="the outage noticed")  # fmt: skip
        assert served_version(agent, models) == 1
        before = len(stub.reports)
        stub.down = False
        agent.wait_for(lambda s: len(stub.reports) > before, what="a report after the outage")
    finally:
        agent.stop()
