"""Waiting on a real fleet's federated workers and tasks (shared by the fleet tests)."""

from __future__ import annotations

import time
from typing import Any

from edgeloop.sdk.control_client import ControlClient


def wait_clients(client: ControlClient, n: int, timeout_s: float = 90) -> list[dict[str, Any]]:
    """The eligible federated workers, once at least ``n`` polled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [c for c in client.call("GET", "/api/v1/fl/clients")["clients"] if c["eligible"]]
        if len(found) >= n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} federated workers polled within {timeout_s} s")


def wait_task(client: ControlClient, task_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The task's status once it ended and its registration settled."""
    deadline = time.monotonic() + timeout_s
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = client.call("GET", f"/api/v1/fl/tasks/{task_id}")
        registering = (doc["registration"] or {}).get("state") in ("pending", "running")
        if doc["state"] != "running" and not registering:
            return doc
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not end within {timeout_s} s: {doc}")
