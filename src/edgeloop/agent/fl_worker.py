"""The agent's federated-learning client: poll for a round, train in a torch process, upload.

Runs beside the reconcile loop when the node holds a federated data share at
``HOME/agent/fl/data.npz`` (written by ``edgeloop fleet up --fl-data``); a node without one
never polls, so it is never selected (it has no training capability). The agent process itself
never imports torch: training runs in one persistent worker process
(``python -m edgeloop.training.federated_worker serve``), started before the first poll and
ended with the agent (it exits when its stdin closes, even after a SIGKILL of the agent). On a
local fleet started with shared imports, ``EDGELOOP_WORKER_ZYGOTE`` names a zygote's socket
(:mod:`edgeloop.core.zygote`) and the worker is forked from it instead: the same process and
protocol, with torch's pages shared copy-on-write with the other nodes' workers.

Each round: long-poll ``GET /api/v1/fl/nodes/{id}/assignment`` -> download the round's model and
check its sha256 against the assignment -> the worker scores it on the node's held-out share and
trains -> ``POST .../updates/{id}`` with the float32 weights and the metrics. Every failure is
logged and the loop goes on; a round this node misses is counted as its dropout by the control
plane.

A test hook, like the updater's ``EDGELOOP_AGENT_PAUSE_AT``: a file ``fl/stall-at-round``
holding N makes the worker stop answering once it has received round N's model (``N:STEP``:
before it sends SecAgg step STEP), after writing ``fl/stalled-at-round-N``; the test then
kills the agent mid-round, or removes the file to let it go on.

Under secure aggregation (the assignment's ``secagg`` step) the node exchanges keys, trains at
the ``mask`` step and sends only its masked input (:mod:`edgeloop.agent.fl_secagg`).

The node's policy (:mod:`edgeloop.agent.fl_policy`, ``fl/policy.json``): every poll carries
the power state the kernel shows (``power``, ``battery``) for the resource-aware selector; a
training round the policy refuses (on battery, serving traffic, an unreadable policy) is
declined with the reason (``X-Fl-Update: {"decline": REASON}``, no body), which the control
plane records as a decline, not a dropout; under SecAgg the node stays silent instead (a
dropout SecAgg tolerates). The CPU budget and the time left before the deadline go to the
training worker (``budget``), which stops between minibatches and reports ``cpu_s`` and the
samples used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edgeloop.agent.fl_policy import NodePolicy, PowerState, load_policy, read_power
from edgeloop.agent.fl_secagg import SecAggClient
from edgeloop.agent.health import HealthRecorder
from edgeloop.agent.home import AgentHome
from edgeloop.agent.identity import Identity
from edgeloop.core.errors import ConfigError, DataError, TransportError
from edgeloop.core.tls import client_verify
from edgeloop.core.zygote import WORKER_ZYGOTE_ENV
from edgeloop.core.zygote_client import AsyncZygoteProcess, spawn_async

log = logging.getLogger("edgeloop.agent.fl")
# With WORKER_ZYGOTE_ENV naming a zygote's socket (`fleet up --shared-imports` sets it), the
# worker is forked from it, sharing its imported torch, instead of a fresh interpreter.
WORKER_ARGV = ["edgeloop.training.federated_worker", "serve"]
WAIT_S = 5.0  # the long poll's wait (the control plane answers at once when a round opens)
RETRY_S = 2.0
UPLOAD_MARGIN_S = 1.0  # of the round's time left, kept for the upload


@dataclass(frozen=True, slots=True)
class Share:
    """What the node's data file says of itself."""

    path: Path
    client_id: int
    train: int
    test: int


def read_share(path: Path) -> Share:
    """The data file's counts and client id (its ``meta``).

    Raises:
        DataError: not the .npz ``fleet up --fl-data`` writes.
    """
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            return Share(path, int(meta["client_id"]), len(z["y_train"]), len(z["y_test"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"federated data {str(path)!r} is unreadable: {exc}") from exc


class Trainer:
    """The torch worker process, talked to by JSON lines."""

    def __init__(self, share: Share, log_file: Path) -> None:
        self.share = share
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | AsyncZygoteProcess | None = None

    async def start(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            return
        argv = [*WORKER_ARGV, "--data", str(self.share.path), "--threads", "1"]
        zygote = os.environ.get(WORKER_ZYGOTE_ENV)
        with self.log_file.open("ab") as err:
            if zygote:  # its own session: with the kernel's autogroup scheduling, all the
                # zygote's children in one session would share one CPU share between them
                self.proc = await spawn_async(
                    Path(zygote), argv, env=os.environ, stderr=err.fileno(), new_session=True
                )
            else:
                self.proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", *argv,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                )  # fmt: skip
        await self._line()  # {"ready": true, ...}

    async def _line(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            raise TransportError(f"the federated worker ended; read {self.log_file}")
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        await self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line()

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class FlWorker:
    """The polling loop of one node (``identity`` gives the node's credentials once enrolled;
    ``health``: the server's request recorder, for the idle policy)."""

    def __init__(
        self,
        home: AgentHome,
        identity: Callable[[], Identity | None],
        health: HealthRecorder | None = None,
    ) -> None:
        self.folder = home.root / "fl"
        self.identity = identity
        self.health = health
        self.rounds = 0
        self.declined = 0
        self.last_error: str | None = None
        self.secagg = SecAggClient()
        self._silent: set[tuple[str, int]] = set()  # SecAgg rounds declined by not answering

    def policy(self) -> tuple[NodePolicy | None, PowerState, str | None]:
        """The node's policy (None when unreadable), its power state now, and the reason this
        node declines a training round now (None: it trains)."""
        try:
            policy = load_policy(self.folder / "policy.json")
        except ConfigError as exc:
            power = read_power()
            return None, power, f"the node's federated policy is unusable: {exc.message}"
        power = read_power(policy.power_supply)
        served = 0
        if policy.idle_s is not None and self.health is not None:
            served = self.health.figures(time.monotonic() - policy.idle_s).requests
        return policy, power, policy.refusal(power, served)

    def _stall_at(self) -> tuple[int, str] | None:
        """The test hook's (round, step): ``fl/stall-at-round`` holds ``N`` (stall once round
        N's model is in, before training) or ``N:STEP`` (before sending SecAgg step STEP)."""
        try:
            text = (self.folder / "stall-at-round").read_text().strip()
        except OSError:
            return None
        number, _, step = text.partition(":")
        return (int(number), step or "train") if number.isdigit() else None

    @property
    def data(self) -> Path:
        return self.folder / "data.npz"

    async def run(self) -> None:
        """Poll and work until cancelled; returns at once without a data share."""
        if not self.data.is_file():
            return
        share = read_share(self.data)
        trainer = Trainer(share, self.folder / "worker.log")
        try:
            # Ready before the first poll: a node is a candidate once it can train at once
            # (torch's import takes seconds), so round 1 does not wait for it.
            try:
                await trainer.start()
            except (TransportError, ValueError, OSError) as exc:  # no torch here, say
                self.last_error = f"the federated worker did not start: {exc}"
                log.warning("%s; this node takes no federated rounds", self.last_error)
                return
            while True:
                who = self.identity()
                if who is None:
                    await asyncio.sleep(RETRY_S)
                    continue
                try:
                    await self._serve(who, share, trainer)
                except (httpx.HTTPError, TransportError, DataError, ValueError) as exc:
                    self.last_error = str(exc)
                    log.warning("federated round failed: %s", exc)
                    await asyncio.sleep(RETRY_S)
        finally:
            await trainer.close()

    async def _serve(self, who: Identity, share: Share, trainer: Trainer) -> None:
        headers = {"Authorization": f"Bearer {who.node_token}"}
        timeout = httpx.Timeout(30.0, read=WAIT_S + 30.0)
        async with httpx.AsyncClient(
            base_url=who.control, headers=headers, timeout=timeout, verify=client_verify()
        ) as http:
            while True:
                _, power, _ = self.policy()
                params: dict[str, Any] = {"train": share.train, "test": share.test}
                params["wait"] = WAIT_S
                got = await http.get(
                    f"/api/v1/fl/nodes/{who.node_id}/assignment", params=params | power.query()
                )
                _check(got)
                if got.status_code == 204:
                    continue
                task = got.json()
                if (str(task["task_id"]), int(task["round"])) in self._silent:
                    await asyncio.sleep(WAIT_S)  # a declined SecAgg round: wait for its end
                    continue
                await self._round(http, who, share, trainer, task)

    async def _round(
        self,
        http: httpx.AsyncClient,
        who: Identity,
        share: Share,
        trainer: Trainer,
        task: dict[str, Any],
    ) -> None:
        secagg: dict[str, Any] | None = task.get("secagg")
        step = None if secagg is None else str(secagg["step"])
        key = (str(task["task_id"]), int(task["round"]))
        await self._maybe_stall(task["round"], step)
        header: dict[str, Any] = {"secagg": step}
        policy, _, refusal = self.policy()
        if refusal is not None and task["kind"] == "train":
            log.info("declining round %s of %s: %s", task["round"], task["task_id"], refusal)
            self.declined += 1
            if secagg is not None:
                self._silent.add(key)
                return
            header, body = {"decline": refusal}, b""
        elif secagg is not None and step != "mask":  # key exchange: no model, no training
            make = {"advertise": self.secagg.advertise, "share": self.secagg.share,
                    "unmask": self.secagg.unmask}[str(step)]  # fmt: skip
            body = make(key, secagg)
        else:
            cpu_s = None if policy is None else policy.cpu_seconds_per_round
            answer, body = await self._train(http, share, trainer, task, cpu_s)
            header.update(num_samples=answer["num_samples"], metrics=answer["metrics"])
            if secagg is not None:  # the server sees y = [n x, n] + masks, never x or n
                weights = np.frombuffer(body, dtype="<f4").astype(np.float64)
                body = self.secagg.mask(key, secagg, weights, int(answer["num_samples"]))
                del header["num_samples"]
        path = f"/api/v1/fl/tasks/{task['task_id']}/rounds/{task['round']}/updates/{who.node_id}"
        sent = await http.post(
            path, content=body, headers={"X-Fl-Update": json.dumps(header),
                                         "Content-Type": "application/octet-stream"},
        )  # fmt: skip
        if sent.status_code == 409:
            # The round moved on (this answer is late: a stalled or slow node) or was answered
            # already: nothing to retry, so poll at once for the current round (the control
            # plane offers a node only what it has not answered, as after any answer).
            self.last_error = f"round {task['round']} of {task['task_id']}: {sent.text[:200]}"
            log.info("federated answer not taken: %s", self.last_error)
            return
        _check(sent)
        self.rounds += step in (None, "unmask") and "decline" not in header

    async def _train(
        self,
        http: httpx.AsyncClient,
        share: Share,
        trainer: Trainer,
        task: dict[str, Any],
        cpu_s: float | None,
    ) -> tuple[dict[str, Any], bytes]:
        """Download the round's model, check it, score and train it: (answer, float32 body)."""
        started = time.monotonic()
        got = await http.get(task["model_path"])
        _check(got)
        if hashlib.sha256(got.content).hexdigest() != task["model_sha256"]:
            raise TransportError(f"round {task['round']}'s model does not hash to its sha256")
        self.folder.mkdir(parents=True, exist_ok=True)
        weights, out = self.folder / "global.f32", self.folder / "update.f32"
        weights.write_bytes(got.content)
        fetched = time.monotonic()
        if self._stall_at() == (task["round"], "train") and task["kind"] == "train":
            await self._stall(task["round"])
        wall_s = None
        if task.get("deadline_in_s") is not None:  # the control plane's clock, as time left
            left = float(task["deadline_in_s"]) - (time.monotonic() - started)
            wall_s = max(left - UPLOAD_MARGIN_S, 0.0)
        asked = time.monotonic()
        answer = await trainer.ask({
            "kind": task["kind"], "model": task["model"], "weights": str(weights),
            "round": task["round"], "client_id": share.client_id, "local": task["local"],
            "out": str(out), "budget": {"cpu_s": cpu_s, "wall_s": wall_s},
        })  # fmt: skip
        if "error" in answer:
            raise DataError(f"the federated worker refused round {task['round']}: {answer}")
        answer["metrics"] |= {"fetch_s": fetched - started, "train_s": time.monotonic() - asked}
        return answer, out.read_bytes() if task["kind"] == "train" else b""

    async def _maybe_stall(self, round: int, step: str | None) -> None:
        if step is not None and self._stall_at() == (round, step):
            await self._stall(round)

    async def _stall(self, round: int) -> None:
        """Until the test kills this process, or removes ``fl/stall-at-round``."""
        (self.folder / f"stalled-at-round-{round}").touch()
        while (self.folder / "stall-at-round").exists():
            await asyncio.sleep(0.1)


def _check(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise TransportError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )
