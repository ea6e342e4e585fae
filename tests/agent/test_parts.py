"""The agent's smaller parts: capability probe, back-off, health figures, enrollment."""

from __future__ import annotations

import asyncio
import contextlib
import platform
import time
from pathlib import Path

import onnxruntime
import pytest
from tests.agent.fleet_stub import ENROLL_TOKEN, NODE_ID, ControlStub

from edgeloop.agent.capabilities import accelerators, probe, resources
from edgeloop.agent.control_client import ControlClient
from edgeloop.agent.deployment import Guard
from edgeloop.agent.health import HealthFigures, nearest_rank
from edgeloop.agent.home import AgentHome
from edgeloop.agent.identity import enroll, load_identity
from edgeloop.agent.reconcile import MAX_BACKOFF_S, AgentOptions, Reconciler, next_delay
from edgeloop.agent.updater import Updater, guard_breach
from edgeloop.core.errors import TransportError


def test_probe_reports_this_machine() -> None:
    caps = probe()
    assert caps["arch"] == platform.machine()
    assert caps["cpu_count"] >= 1 and caps["memory_mb"] > 0
    assert caps["engines"]["onnxruntime"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in caps["providers"]
    assert set(caps) - {"train_reason"} == {"arch", "os", "cpu_model", "cpu_count", "cpu_flags",
                         "memory_mb", "accelerators", "engines", "providers", "train",
                         "torch"}  # fmt: skip
    import importlib.metadata

    # torch is in the test environment: the node can train, found without importing it.
    assert caps["train"] is True and caps["torch"] == importlib.metadata.version("torch")


def test_resources_read_memavailable_and_load_or_say_why_not(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 8192000 kB\nMemAvailable: 2048000 kB\n")
    (tmp_path / "loadavg").write_text("0.52 0.40 0.30 1/123 4567\n")
    assert resources(tmp_path) == {"memory_available_mb": 2000.0, "load_1m": 0.52}
    (tmp_path / "meminfo").write_text("MemTotal: 8192000 kB\n")
    assert resources(tmp_path)["memory_available_mb"] is None
    assert "no MemAvailable" in resources(tmp_path)["reason"]
    gone = resources(tmp_path / "absent")
    assert gone["load_1m"] is None and "cannot read /proc/meminfo" in gone["reason"]
    assert resources()["memory_available_mb"] > 0  # this machine's /proc


def test_accelerators_come_from_device_nodes(tmp_path: Path) -> None:
    assert accelerators(tmp_path) == []
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia0").touch()
    (tmp_path / "dev" / "accel").mkdir()
    (tmp_path / "dev" / "accel" / "accel0").touch()
    assert accelerators(tmp_path) == ["cuda", "npu"]


def test_backoff_doubles_up_to_a_cap_with_bounded_jitter() -> None:
    assert next_delay(1.0, 0, 0.5) == pytest.approx(1.0)
    assert next_delay(1.0, 3, 0.5) == pytest.approx(8.0)
    assert next_delay(1.0, 30, 0.5) == pytest.approx(MAX_BACKOFF_S)
    assert next_delay(1.0, 0, 0.0) == pytest.approx(0.8)
    assert next_delay(1.0, 0, 0.999999) == pytest.approx(1.2, rel=1e-5)


def test_nearest_rank_and_guard() -> None:
    assert nearest_rank([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert nearest_rank([5.0], 0.99) == 5.0
    figures = HealthFigures(10.0, requests=100, errors=10, error_rate=0.1, p99_ms=50.0)
    assert guard_breach(figures, Guard(max_error_rate=0.05)) is not None
    assert guard_breach(figures, Guard(max_error_rate=0.2, max_p99_ms=40.0)) is not None
    assert guard_breach(figures, Guard(max_error_rate=0.2, max_p99_ms=60.0)) is None
    assert guard_breach(figures, Guard(max_error_rate=0.0, min_requests=101)) is None
    idle = HealthFigures(10.0, requests=0, errors=0, error_rate=None, p99_ms=None)
    assert guard_breach(idle, Guard(max_error_rate=0.0, max_p99_ms=0.0)) is None


def test_enroll_stores_identity_0600_and_the_out_of_band_root(
    tmp_path: Path, stub: ControlStub
) -> None:
    home = AgentHome.under(tmp_path / "node")
    root_file = tmp_path / "root.json"
    root_file.write_bytes(stub.repo.root_bytes())
    body = {"enrollment_token": ENROLL_TOKEN, "name": "n", "capabilities": {}, "agent_url": ""}
    identity = enroll(home, ControlClient(stub.url), body, root_file)
    assert identity.node_id == NODE_ID and identity.metadata_url == stub.metadata_url
    assert home.tuf_root.read_bytes() == root_file.read_bytes()
    assert home.identity.stat().st_mode & 0o777 == 0o600
    assert load_identity(home) == identity
    with pytest.raises(TransportError, match="401"):  # the token was one-use
        enroll(home, ControlClient(stub.url), body, root_file)


def test_unreachable_control_plane_is_a_transport_error(tmp_path: Path) -> None:
    client = ControlClient("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(TransportError, match="unreachable"):
        client.desired(NODE_ID, None)


def test_a_malformed_answer_does_not_stop_the_loop(tmp_path: Path, stub: ControlStub) -> None:
    home = AgentHome.under(tmp_path / "node")
    options = AgentOptions(stub.url, ENROLL_TOKEN, "n", None, poll_s=0.05)
    reconciler = Reconciler(home, Updater(home), options, None, "http://127.0.0.1:1")
    stub.garbage = True

    async def run_a_while() -> None:
        loop = asyncio.create_task(reconciler.run_forever())
        deadline = time.monotonic() + 60
        while reconciler.failures < 2 and not loop.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop

    asyncio.run(run_a_while())
    assert reconciler.identity is not None  # enrolled, then the desired state was garbage
    assert reconciler.failures >= 2 and "JSONDecodeError" in (reconciler.last_error or "")
