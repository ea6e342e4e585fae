"""One kill -9 cycle of a real agent process mid-update, and the check after its restart.

Used by tests/agent/test_kills.py (one kill per updater state boundary) and by
bench/agent_kills.py (>= 20 per boundary plus >= 100 at random moments).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tests.agent.agent_process import AgentProcess, idle_on, wait_for_file
from tests.agent.fleet_stub import NODE_ID, NODE_TOKEN, ControlStub, new_repository, publish
from tests.agent.fleet_stub import self_test_for as _self_test_for

from edgeloop.agent.deployment import parse_deployment
from edgeloop.agent.fetcher import HttpxFetcher
from edgeloop.agent.home import AgentHome
from edgeloop.agent.tuf_client import TufSession, store_root
from edgeloop.agent.update_state import Outcome
from edgeloop.agent.updater import Updater

# Where a kill at each boundary must end once the agent restarts and settles.
EXPECTED = {
    "DOWNLOAD": 2, "VERIFY": 2, "STAGE": 2, "SELF_TEST": 2,  # retried: the new model commits
    "ACTIVATE": 1, "WATCH": 1,  # uncommitted model after a crash: rolled back
    "COMMIT": 2,  # the decision was written: the commit is finished
    "ROLLBACK": 1,  # (a failing update) the rollback is finished
}  # fmt: skip


class BoundaryNotReachedError(RuntimeError):
    """The agent never paused at the boundary, so it was not killed there (log tail inside)."""


@dataclass(frozen=True, slots=True)
class KillResult:
    killed_in: str | None  # the record's state when the process died
    served: int  # version serving after the restart settled
    self_test_passed: bool  # the restarted agent's start check of its active slot
    outcome: str | None
    restart_s: float  # from restart to serving (the ready line)


def enrolled_on_v1(folder: Path, stub: ControlStub, v1: Path) -> AgentHome:
    """A node home that committed v1 (revision 1) in-process, with a stored identity."""
    home = AgentHome.under(folder)
    store_root(home, stub.repo.root_bytes(), "the bench's repository")
    publish(stub.repo, v1, 1, version=1)
    fetcher = HttpxFetcher(NODE_TOKEN, home.downloads, stub.targets_url)
    session = TufSession(home, stub.metadata_url, stub.targets_url, fetcher)
    document = session.document(f"deployments/{NODE_ID}.json")
    import asyncio

    outcome = asyncio.run(Updater(home).run(parse_deployment(document, NODE_ID), document, session))
    fetcher.close()
    if outcome is not Outcome.COMMITTED:
        raise RuntimeError(f"setting up v1 ended {outcome}")
    identity = {"node_id": NODE_ID, "node_token": NODE_TOKEN, "control": stub.url,
                "metadata_url": stub.metadata_url, "targets_url": stub.targets_url}  # fmt: skip
    home.identity.write_text(json.dumps(identity))
    home.identity.chmod(0o600)
    stub.set_desired(1)
    return home


def served_version(agent: AgentProcess, models: dict[int, Path]) -> int:
    """Which version answered an inference, told apart by its outputs (own weights each)."""
    first = ort.InferenceSession(str(models[1]), providers=["CPUExecutionProvider"])
    features = int(first.get_inputs()[0].shape[1])
    row = [float(x) for x in np.linspace(-1.0, 1.0, features)]
    answer = agent.infer("linear", row)
    if answer.status_code != 200:
        raise AssertionError(f"no valid model serves: {answer.status_code} {answer.text}")
    got = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32)
    for version, path in models.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = session.run(None, {"input": np.asarray([row], dtype=np.float32)})[0][0]
        if np.allclose(got, want, atol=1e-4):
            return version
    raise AssertionError(f"the answer matches no published version: {answer.text}")


def cycle(
    folder: Path,
    models: dict[int, Path],
    *,
    pause_at: str | None = None,
    kill_after_s: float | None = None,
    watch_s: float = 0.0,
) -> KillResult:
    """Commit v1, start an update to v2 (v2 failing its self-test when pausing at ROLLBACK),
    kill -9 the agent at the pause boundary or ``kill_after_s`` after the update was asked
    for, restart it and wait until it settles. Raises AssertionError when it ends badly."""
    with ControlStub(new_repository(folder / "repo")) as stub:
        home = enrolled_on_v1(folder / "node", stub, models[1])
        wrong = _self_test_for(models[1]) if pause_at == "ROLLBACK" else None
        publish(stub.repo, models[2], 2, version=2, self_test=wrong, watch_s=watch_s)
        if pause_at is None:
            agent = AgentProcess(home.root.parent, stub.url)
            stub.set_desired(2)
            time.sleep(kill_after_s or 0.0)
        else:
            stub.set_desired(2)
            agent = AgentProcess(home.root.parent, stub.url, pause_at=pause_at)
            try:
                wait_for_file(home.pause_marker(pause_at), agent)
            except (TimeoutError, RuntimeError) as exc:
                agent.stop()
                tail = agent.log.read_text(errors="replace")[-1500:]
                raise BoundaryNotReachedError(f"{exc}; state {_state(home)}; log: {tail}") from exc
        agent.kill9()
        killed_in = _state(home)
        start = time.monotonic()
        again = AgentProcess(home.root.parent, stub.url)
        restart_s = time.monotonic() - start
        try:
            ready_test = again.ready["self_test"]
            status = again.wait_for(idle_on(2), what="the update settled", timeout_s=120)
            served = served_version(again, models)
            if served != status["active"]["version"]:
                raise AssertionError(f"serving v{served}, status says {status['active']}")
            if not (ready_test and ready_test["passed"]):
                raise AssertionError(f"start self-test did not pass: {ready_test}")
        finally:
            again.stop()
    return KillResult(killed_in, served, True, status["updater"]["outcome"], restart_s)


def _state(home: AgentHome) -> str | None:
    """The record's state; IDLE is told apart by the revision acted on (``IDLE@1``: before the
    update began, ``IDLE@2``: after it ended)."""
    try:
        doc: dict[str, Any] = json.loads(home.update_state.read_bytes())
    except FileNotFoundError:
        return None
    state = str(doc["state"])
    return f"{state}@{doc['revision']}" if state == "IDLE" else state
