"""Two control planes on one database tick one rollout at the same time: never a double step."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.control.harness import Node, control
from tests.tiny_models import make_linear_onnx

from edgeloop.control.plane import ControlPlane


def test_concurrent_ticks_from_two_replicas_never_double_advance(
    tmp_path: Path, db_url: str
) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        ctl.publish(make_linear_onnx(tmp_path / "m.onnx"), "lin")
        nodes = {n.node_id: n for n in (ctl.enroll(f"n{i}") for i in range(4))}
        replica, _ = ControlPlane.open(tmp_path / "home", db_url, ctl.admin_token)
        spec = {"name": "d", "model": "lin:1", "plan": {"waves": ["1", "2", "100%"], "soak_s": 0}}
        rid = ctl.ok("POST", "/api/v1/deployments", json=spec)["rollout_id"]
        stop = threading.Event()
        errors: list[BaseException] = []

        def hammer(plane: ControlPlane) -> None:
            try:
                while not stop.is_set():
                    plane.tick(rid)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=hammer, args=(p,)) for p in (ctl.plane, replica)]
        for thread in threads:
            thread.start()
        try:
            acted: set[str] = set()
            # Until a deadline, not a number of rounds: how many rounds the hammering threads
            # leave this loop depends on the machine's load.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                state = ctl.plane.rollout(rid)
                if state["state"] == "COMPLETED" or errors:
                    break
                for node_id in state["waves"][state["wave"]]:
                    node: Node = nodes[node_id]
                    if node_id not in acted and node.desired()["revision"] == 1:
                        node.act()
                        acted.add(node_id)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            replica.close()
        assert errors == []
        final = ctl.plane.rollout(rid)
        assert final["state"] == "COMPLETED", final["events"][-3:]
        states = [e["state"] for e in final["events"]]
        assert states == ["PENDING", "WAVE", "SOAKING", "WAVE", "SOAKING", "WAVE", "SOAKING",
                          "COMPLETED"]  # fmt: skip
        assert all(n.desired()["revision"] == 1 for n in nodes.values())
