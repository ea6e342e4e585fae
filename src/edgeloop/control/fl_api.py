"""The federated-learning routes (registered in :mod:`edgeloop.control.app`).

==================================================  =========  ===============================
route                                               auth       answer
==================================================  =========  ===============================
``POST /api/v1/fl/tasks``                           admin      the new task (201)
``GET  /api/v1/fl/tasks``                           admin      ``{"tasks": [summary]}``
``GET  /api/v1/fl/tasks/{id}``                      admin      the task's status and history
``POST /api/v1/fl/tasks/{id}/stop``                 admin      the task, stopped
``GET  /api/v1/fl/clients``                         admin      ``{"clients": [...]}`` (workers)
``GET  /api/v1/fl/nodes/{node}/assignment``         that node  the round to work on, or 204;
                                                               ``?train=N&test=M&wait=S``
                                                               ``&power=mains|battery|unknown``
                                                               ``&battery=0..1`` (optional)
``GET  /api/v1/fl/tasks/{id}/rounds/{r}/model``     node/admin float32 weights, ``X-Sha256``
``POST /api/v1/fl/tasks/{id}/rounds/{r}/updates/{node}``  that node  204; the body: float32
                                                      weights, header ``X-Fl-Update``: JSON
                                                      ``{"num_samples", "metrics"}``
==================================================  =========  ===============================

The assignment call is a long poll: it waits up to ``wait`` seconds (at most 10) for a round
that concerns the node, woken only when a task moved (a round opened or closed, a SecAgg step
or the final evaluation began): an upload that leaves its round open wakes no one. A ticker,
started with the first federated request, advances running tasks every 0.5 s (deadlines) and
registers finished ones even when no agent polls, and every 0.25 s reads the running tasks'
steps (:func:`~edgeloop.control.fl_rounds.signature`), waking the waiters when they changed
without a wake-up here (another replica moved a task). The nodes' calls run on the agents' hot
path (:mod:`edgeloop.control.hotpath`): reads on a kept connection, writes group-committed
(one transaction, one fsync, for the writes of all the requests waiting). A task's initial
model comes from ``edgeloop.training.federated_worker init``, run as a process
(``torch.manual_seed`` then the constructor: torch stays out of the control plane). Its final
model is written as ONNX without torch (:mod:`edgeloop.control.fl_export`) and
published in the control plane's registry with the task in its recipe (lineage); when that
fails the reason is in the task's ``registration`` and the weights stay downloadable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import auth, fl_export, fl_rounds, fl_store, fl_wire
from edgeloop.control.answers import json_answer
from edgeloop.control.fl_candidates import ELIGIBLE_S
from edgeloop.control.fl_task_body import TaskBody
from edgeloop.control.hotpath import GroupCommit, KeptReads
from edgeloop.control.limits import Body
from edgeloop.control.schemas import parse
from edgeloop.core.errors import ConfigError, DataError, EdgeError
from edgeloop.federated.selection import PowerSource
from edgeloop.federated.update import Vector

if TYPE_CHECKING:
    from edgeloop.control.app import Api, Endpoint

log = logging.getLogger("edgeloop.control.fl")
MAX_WAIT_S, RECHECK_S, TICK_S, HEARD_EVERY_S = 10.0, 0.25, 0.5, 2.0


class FlRoutes:
    """The routes over one :class:`~edgeloop.control.app.Api`."""

    def __init__(self, api: Api) -> None:
        self.api = api
        fl_store.create_tables(api.plane.db)
        self._changed: asyncio.Event | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._heard: dict[str, tuple[float, Poll]] = {}
        self._registering: set[str] = set()
        self._initial: dict[tuple[str, int], Vector] = {}
        self._seen: tuple[Any, ...] | None = None  # the running tasks' signature, last read

    def routes(self) -> list[tuple[str, Endpoint, str, Body]]:
        v = "/api/v1/fl"
        return [
            (f"{v}/nodes/{{node_id}}/assignment", self.assignment, "GET", Body.NONE),
            (f"{v}/tasks/{{tid}}/rounds/{{r:int}}/model", self.model, "GET", Body.NONE),
            (
                f"{v}/tasks/{{tid}}/rounds/{{r:int}}/updates/{{node_id}}",
                self.update,
                "POST",
                Body.TELEMETRY,
            ),
            (f"{v}/tasks", self.create, "POST", Body.JSON),
            (f"{v}/tasks", self.list, "GET", Body.NONE),
            (f"{v}/tasks/{{tid}}", self.get, "GET", Body.NONE),
            (f"{v}/tasks/{{tid}}/stop", self.stop, "POST", Body.NONE),
            (f"{v}/clients", self.clients, "GET", Body.NONE),
        ]

    # --- plumbing ----------------------------------------------------------------------------

    def _start(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _write(self, action: str, run: Any) -> Any:
        return self.api.plane.write(action, run)

    @property
    def _reads(self) -> KeptReads:
        return self.api.plane.hot[0]

    @property
    def _group(self) -> GroupCommit:
        return self.api.plane.hot[1]

    def _advance_all(self, conn: Any, now: float) -> bool:
        moved = [fl_rounds.advance(conn, task_id, now) for task_id in fl_rounds.running(conn)]
        return any(moved)

    async def _tick_forever(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(RECHECK_S)
            ticks += 1
            try:
                if ticks % round(TICK_S / RECHECK_S) == 0:
                    moved = await self._group.run(
                        "advancing federated tasks", lambda c: self._advance_all(c, time.time())
                    )
                    if moved:
                        self._notify()
                    await self._register_pending()
                seen = await self._reads.run("reading federated tasks", fl_rounds.signature)
                if seen != self._seen:
                    self._seen = seen
                    self._notify()
            except EdgeError as exc:
                log.warning("federated tick failed: %s", exc)
            except Exception:  # one bad tick must not end the ticker
                log.exception("federated tick failed unexpectedly")

    async def _register_pending(self) -> None:
        pending = await run_in_threadpool(
            self.api.plane.read, "reading federated tasks", fl_wire.pending_registrations
        )
        for task_id in pending:
            if task_id not in self._registering:
                self._registering.add(task_id)
                asyncio.get_running_loop().run_in_executor(None, self._register, task_id)

    # --- admin routes ------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        await self.api.admin(request)
        self._start()
        spec = parse(TaskBody, await request.body()).spec()
        key = (spec.model, spec.seed)
        if key not in self._initial:  # the same (model, seed) always gives the same weights
            self._initial[key] = await run_in_threadpool(fl_export.initial_weights, spec)
        initial = self._initial[key]

        def run(conn: Any) -> dict[str, Any]:
            now = time.time()
            task_id = fl_rounds.create(conn, spec, initial, now)
            fl_rounds.advance(conn, task_id, now)  # round 1 selects now if enough clients poll
            return fl_wire.to_dict(conn, task_id)

        doc = await run_in_threadpool(self._write, "creating a federated task", run)
        self._notify()
        return json_answer(doc, 201)

    async def list(self, request: Request) -> Response:
        await self.api.admin(request)
        self._start()

        def run(conn: Any) -> list[dict[str, Any]]:
            return [fl_wire.summary(conn, i) for i in fl_rounds.ids(conn)]

        return json_answer({"tasks": await run_in_threadpool(self.api.plane.read, "listing", run)})

    async def get(self, request: Request) -> Response:
        await self.api.admin(request)
        self._start()
        tid = request.path_params["tid"]

        def run(conn: Any) -> tuple[bool, dict[str, Any]]:
            return fl_rounds.advance(conn, tid, time.time()), fl_wire.to_dict(conn, tid)

        moved, doc = await run_in_threadpool(self._write, f"reading task {tid}", run)
        if moved:
            self._notify()
        return json_answer(doc)

    async def stop(self, request: Request) -> Response:
        await self.api.admin(request)
        self._start()
        tid = request.path_params["tid"]

        def run(conn: Any) -> dict[str, Any]:
            fl_wire.stop(conn, tid, time.time())
            return fl_wire.to_dict(conn, tid)

        doc = await run_in_threadpool(self._write, f"stopping task {tid}", run)
        self._notify()
        return json_answer(doc)

    async def clients(self, request: Request) -> Response:
        await self.api.admin(request)
        now = time.time()

        def run(conn: Any) -> list[dict[str, Any]]:
            rows = conn.execute(fl_store.clients.select().order_by(fl_store.clients.c.node_id))
            p = fl_store.power
            power = {r.node_id: (r.source, r.battery) for r in conn.execute(p.select())}
            return [{"node_id": r.node_id, "last_poll": r.last_poll, "train_samples":
                     r.train_samples, "test_samples": r.test_samples, "eligible":
                     r.last_poll >= now - ELIGIBLE_S and r.train_samples > 0,
                     "power": power.get(r.node_id, (None, None))[0],
                     "battery": power.get(r.node_id, (None, None))[1]}
                    for r in rows]  # fmt: skip

        return json_answer({"clients": await run_in_threadpool(self.api.plane.read, "fl", run)})

    # --- node routes -------------------------------------------------------------------------

    async def assignment(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        await self.api.node(request, node_id)
        poll = _poll_query(dict(request.query_params))
        changed = self._start()
        deadline = time.monotonic() + poll.wait
        while True:
            found = await self._poll(node_id, poll)
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):  # woken when a task moved (see above)
                await asyncio.wait_for(changed.wait(), remaining)
            changed = self._start()
        if found is None:
            return Response(status_code=204)
        return json_answer(found)

    async def _poll(self, node_id: str, poll: Poll) -> dict[str, Any] | None:
        """The node's assignment; a write only to note the poll (every HEARD_EVERY_S, or when
        what it says changed): tasks are moved by uploads, creation, status reads and the
        ticker, not by every poll."""
        now = time.time()
        last = self._heard.get(node_id)
        said = poll.said()
        if not (last is None or now - last[0] >= HEARD_EVERY_S or last[1].said() != said):
            found = await self._reads.run(
                f"polling for {node_id}", lambda c: fl_wire.assignment(c, node_id)
            )
            return found

        def run(conn: Any) -> tuple[bool, dict[str, Any] | None]:
            fl_wire.heard(conn, node_id, poll.train, poll.test, now, poll.power)
            moved = self._advance_all(conn, now)  # a new candidate may be what a selection waits
            return moved, fl_wire.assignment(conn, node_id)

        moved, found = await self._group.run(f"polling for {node_id}", run)
        self._heard[node_id] = (now, poll)
        if moved:
            self._notify()
        return found

    async def model(self, request: Request) -> Response:
        tid, rnd = request.path_params["tid"], int(request.path_params["r"])
        node_id = await self._caller(request)
        data, sha = await self._reads.run(
            f"reading task {tid}", lambda c: fl_wire.model(c, tid, rnd)
        )
        if node_id is not None:
            await self._group.run("recording a download", lambda c: (
                fl_wire.record_download(c, tid, rnd, node_id, len(data), time.time())))  # fmt: skip
        return Response(data, media_type="application/octet-stream", headers={"X-Sha256": sha})

    async def _caller(self, request: Request) -> str | None:
        """The calling node's id; None for the admin. Raises UnauthorizedError."""
        token = auth.bearer(request.headers.get("authorization"))
        if auth.same(token, self.api.plane.admin_hash):
            return None
        found = await self._reads.credential(token)
        if found is None:
            raise auth.UnauthorizedError("the token is not valid")
        return found[0]

    async def update(self, request: Request) -> Response:
        tid, rnd, node_id = (request.path_params[k] for k in ("tid", "r", "node_id"))
        await self.api.node(request, node_id)
        try:
            header = orjson.loads(request.headers.get("x-fl-update", "{}"))
        except orjson.JSONDecodeError as exc:
            raise DataError(f"header X-Fl-Update is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise DataError("header X-Fl-Update must be a JSON object")
        body = await request.body()

        def run(conn: Any) -> bool:
            now = time.time()
            fl_wire.put_update(conn, tid, int(rnd), node_id, header, body, now)
            return fl_rounds.advance(conn, tid, now)

        if await self._group.run(f"storing an update of {node_id}", run):
            self._notify()  # the round closed, or its next step began: wake the waiting nodes
        return Response(status_code=204)

    # --- registration ------------------------------------------------------------------------

    def _register(self, task_id: str) -> None:
        try:
            status = self._write("claiming a registration", lambda c: (
                fl_wire.claim_registration(c, task_id)))  # fmt: skip
            if status is None:
                return
            value = fl_export.publish(self.api.plane.registry, status)
        except EdgeError as exc:
            value = {"state": "failed", "reason": str(exc)}
        except Exception as exc:  # a failed registration is reported, never a dead thread
            log.exception("registering task %s failed", task_id)
            value = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        finally:
            self._registering.discard(task_id)
        self._write("recording a registration", lambda c: (
            fl_wire.set_registration(c, task_id, value)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Poll:
    """What a worker's assignment poll says: its data sizes, power state, how long to wait."""

    train: int
    test: int
    wait: float
    power: tuple[PowerSource, float | None] | None  # None: the poll did not say

    def said(self) -> tuple[Any, ...]:
        return self.train, self.test, self.power


def _poll_query(params: dict[str, str]) -> Poll:
    try:
        train = int(params.get("train", "0"))
        test = int(params.get("test", "0"))
        wait = float(params.get("wait", "0"))
        battery = float(params["battery"]) if "battery" in params else None
    except ValueError:
        raise ConfigError(
            f"assignment query {params} is not train=INT&test=INT&wait=SECONDS[&power=SOURCE"
            "&battery=FRACTION]"
        ) from None
    if train < 0 or test < 0 or not 0 <= wait <= MAX_WAIT_S:
        raise ConfigError(f"assignment query needs train, test >= 0 and 0 <= wait <= {MAX_WAIT_S}")
    sources = {p.value: p for p in PowerSource}
    source = params.get("power")
    if source is not None and source not in sources:
        raise ConfigError(f"assignment query power={source!r} is not one of {sorted(sources)}")
    if battery is not None and not 0.0 <= battery <= 1.0:
        raise ConfigError(f"assignment query battery={battery} is not a fraction in [0, 1]")
    power = None if source is None else (sources[source], battery)
    return Poll(train, test, wait, power)
