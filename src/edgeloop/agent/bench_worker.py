"""The node's benchmark worker: measure a model version it holds when the control plane asks.

It polls ``GET /api/v1/nodes/{id}/benchmarks/next`` every ``--poll-s`` with the node token
(the node takes admin commands only through the control plane: control/bench_api.py), finds
the version in one of its two slots (nothing is downloaded), runs
:func:`edgeloop.bench.measure.benchmark` on the file in a fresh process (``isolate``: the
server's threads keep serving; the figures are the model's alone) and posts the measurement,
or the error that stopped it, back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx

from edgeloop.agent.identity import Identity
from edgeloop.agent.slots import SLOT_NAMES, Slots
from edgeloop.core.errors import EdgeError
from edgeloop.core.tls import client_verify

log = logging.getLogger("edgeloop.agent.bench")
POLL_S = 1.0
TIMEOUT_S = 30.0


class NodeJobPoller:
    """Poll ``GET /api/v1/nodes/{id}/{kind}/next`` with the node token (``identity``: the
    node's credentials once enrolled), answer each job with :meth:`answer` and post it to
    ``/api/v1/nodes/{id}/{kind}/{job_id}`` (benchmarks here; trainings: train_worker.py)."""

    kind = "benchmarks"
    timeout_s = TIMEOUT_S

    def __init__(self, identity: Callable[[], Identity | None]) -> None:
        self.identity = identity
        self.done = 0
        self.last_error: str | None = None

    async def run(self, poll_s: float = POLL_S) -> None:
        """Poll and answer until cancelled."""
        while True:
            who = self.identity()
            if who is not None:
                try:
                    await self._once(who)
                except (httpx.HTTPError, EdgeError) as exc:
                    self.last_error = str(exc)
                    log.warning("%s poll failed: %s", self.kind, exc)
            await asyncio.sleep(poll_s)

    async def _once(self, who: Identity) -> None:
        headers = {"Authorization": f"Bearer {who.node_token}"}
        base = f"/api/v1/nodes/{who.node_id}/{self.kind}"
        client = httpx.AsyncClient(
            base_url=who.control, headers=headers, timeout=self.timeout_s, verify=client_verify()
        )
        async with client as http:
            got = await http.get(f"{base}/next")
            if got.status_code == 204:
                return
            got.raise_for_status()
            job = got.json()
            url = f"{base}/{job['job_id']}"
            try:
                body = await self.answer(http, url, job, who)
            except EdgeError as exc:
                body = {"error": f"{type(exc).__name__}: {exc.message}"}
            except Exception as exc:  # never leave a job claimed without an answer
                log.exception("%s job %s failed", self.kind, job.get("job_id"))
                body = {"error": f"{type(exc).__name__}: {exc}"}
            sent = await http.post(url, json=body)
            sent.raise_for_status()
            self.done += 1

    async def answer(
        self, http: httpx.AsyncClient, url: str, job: dict[str, Any], who: Identity
    ) -> dict[str, Any]:
        """The body posted back for ``job`` (``url``: the job's own route)."""
        raise NotImplementedError


class BenchWorker(NodeJobPoller):
    """The benchmark jobs of one node."""

    def __init__(self, slots: Slots, identity: Callable[[], Identity | None]) -> None:
        super().__init__(identity)
        self.slots = slots

    async def answer(
        self, http: httpx.AsyncClient, url: str, job: dict[str, Any], who: Identity
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.measure, job)

    def measure(self, job: dict[str, Any]) -> dict[str, Any]:
        """``{"measurement": ...}`` of the job's model file, or ``{"error": ...}``."""
        from edgeloop.bench.measure import benchmark

        name, _, version = str(job["model"]).partition(":")
        held = [m for m in map(self.slots.read, SLOT_NAMES) if m is not None]
        found = [m for m in held if m.name == name and str(m.version) == version]
        if not found:
            have = ", ".join(f"{m.name}:{m.version}" for m in held) or "no model"
            return {"error": f"this node does not hold {job['model']} (its slots hold {have}); "
                    "deploy it there first"}  # fmt: skip
        try:
            measured = benchmark(found[0].file, runs=int(job["runs"]), warmup=int(job["warmup"]),
                                 batch_size=int(job["batch_size"]), isolate=True)  # fmt: skip
        except EdgeError as exc:
            return {"error": f"{type(exc).__name__}: {exc.message}"}
        return {"measurement": measured.to_dict()}
