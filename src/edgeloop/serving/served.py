"""One served model version: its variants, each a pooled model behind a dynamic batcher.

A version goes LOADING -> READY -> DRAINING -> RETIRED (or LOADING -> FAILED). It becomes READY
only after every variant loaded and answered a self-test input; it is retired only after the
last request holding it finished, so a hot swap never drops a request that already picked it.

Variants (``model.onnx`` = ``default``, ``model.int8.onnx`` = ``int8``, ...) are ordered best
first: ``default``, then the others from the largest file to the smallest, taking file size as
the cost. With more than one, the runtime's :class:`LoadSwitch` picks the variant per request
from the measured queue delay (a cheaper one under load, back when load falls), unless the
model is under a power budget: then its :class:`~edgeloop.serving.power.VersionPower` picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from edgeloop.core.errors import ConflictError, ConversionError, EdgeError, NotFoundError
from edgeloop.core.types import TensorSpec
from edgeloop.runtime.adaptive import LoadPolicy, LoadSwitch
from edgeloop.runtime.batcher import BatchResult, DynamicBatcher, Runner
from edgeloop.runtime.engine import SessionConfig
from edgeloop.runtime.pool import ModelKey, ModelPool
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.errors import NotReadyError
from edgeloop.serving.power import PowerControl, VersionPower
from edgeloop.serving.repository import DEFAULT_VARIANT, ModelSource
from edgeloop.serving.watch import Sink, Watch, load_monitor, profile_path

log = logging.getLogger(__name__)
_generation = itertools.count(1)
_SELF_TEST_RUNS = 6  # pool keys of a reloaded version never collide with the old


class VersionState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    RETIRED = "retired"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, eq=False)
class Result:
    """One request's outputs, the variant that ran it and where its time went."""

    outputs: dict[str, np.ndarray[Any, Any]]
    variant: str
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant's pooled model, its batcher, and whether it runs inline (see ``infer``)."""

    source: ModelSource
    key: ModelKey
    batcher: DynamicBatcher
    run: Runner
    inline: bool
    self_test_ms: float


class ServedVersion:
    """A version's variants, their batchers and the count of requests holding it."""

    def __init__(
        self,
        sources: Sequence[ModelSource],
        config: ServerConfig,
        power: PowerControl | None = None,
        sinks: list[Sink] | None = None,
    ) -> None:
        if not sources:
            raise NotFoundError("a served version needs at least one model file")
        ordered = sorted(sources, key=lambda s: (s.variant != DEFAULT_VARIANT, -s.stamp[0]))
        self.name = ordered[0].name
        self.version = ordered[0].version
        self.sources = tuple(ordered)
        self.config = config
        self.state = VersionState.LOADING
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()
        self.provider = ""
        self.platform = ""  # KServe's platform name, ENGINE_FORMAT (ModelInfo.platform)
        self.variants: dict[str, Variant] = {}
        self.switch: LoadSwitch | None = None
        self._power_control = power
        self.power: VersionPower | None = None
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.error: str | None = None
        self._keys: list[ModelKey] = []
        self.inline_runs: Counter[str] = Counter()  # runs that bypassed the batcher
        self._self_test_size = 0
        self._sinks = sinks if sinks is not None else []
        self.watch = Watch(self.name, self.version, None, "no profile: not loaded yet")

    @property
    def where(self) -> str:
        """How messages name this version: ``model 'cnn' version 2``."""
        return f"model {self.name!r} version {self.version}"

    def runs_inline(self, feeds: dict[str, np.ndarray[Any, Any]]) -> bool:
        """Whether :meth:`infer` will run ``feeds`` on the loop (nothing to time out then)."""
        return (
            len(self.variants) == 1
            and next(iter(self.variants.values())).inline
            and (sum(f.size for f in feeds.values()) <= self._self_test_size)
        )

    @property
    def stamps(self) -> dict[str, tuple[int, int]]:
        return {s.variant: s.stamp for s in self.sources}

    async def load(self, pool: ModelPool) -> None:
        """Load every variant in worker threads, self-test it, start its batcher; then READY.

        Raises:
            ConflictError: variants disagree on their inputs or outputs.
            ConversionError: a variant failed its self-test input.
            ConfigError: ``--variant-power`` names a variant this version does not have.
            Whatever loading raises (UntrustedArtifactError, OverloadError, ...); the version is
            then FAILED and whatever was loaded is released.
        """
        generation = next(_generation)
        try:
            if self._power_control is not None:  # before loading: a bad flag costs no load
                variants = [s.variant for s in self.sources]
                self.power = self._power_control.govern(self.where, variants)
            for source in self.sources:
                key = ModelKey(self.name, f"{self.version}.{source.variant}.g{generation}")
                test_ms = await asyncio.to_thread(self._load_variant, pool, key, source)
                variant = Variant(
                    source, key, self._batcher(pool, key), pool.runner(key),
                    self._inline(test_ms), test_ms,
                )  # fmt: skip
                self.variants[source.variant] = variant
                await variant.batcher.start()
            await self._open_watch()
        except BaseException as exc:
            self.state = VersionState.FAILED
            self.error = str(exc.message) if isinstance(exc, EdgeError) else repr(exc)
            await self._release(pool)
            raise
        if len(self.variants) > 1 and self.power is None:
            policy = LoadPolicy(
                tuple(self.variants),
                high_ms=self.config.variant_high_ms,
                low_ms=self.config.variant_low_ms,
            )
            self.switch = LoadSwitch(policy)
        self.state = VersionState.READY

    async def _open_watch(self) -> None:
        """The version's drift monitor when it has a profile (serving/watch.py; never fails)."""
        c = self.config
        path = profile_path(self.sources, c.profiles.get(self.name))
        monitor, status = await asyncio.to_thread(load_monitor, path, self.inputs)
        if monitor is None and path.exists():
            log.warning("%s: %s", self.where, status)
        self.watch = Watch(
            self.name, self.version, monitor, status,
            sample_rate=c.monitor_sample_rate, queue_rows=c.monitor_queue,
            degradation_drop=c.degradation_drop, sinks=self._sinks,
        )  # fmt: skip

    def _engine(self, source: ModelSource) -> str:
        """The configured engine for an ONNX file when it is installed here, else the engine
        for the file's suffix; the fallback is logged with its reason."""
        from edgeloop.runtime.engines import engine_to_serve

        engine, fallback = engine_to_serve(self.config.engine, source.path)
        if fallback is not None:
            log.warning("%s: %s", self.where, fallback)
        return engine

    def _load_variant(self, pool: ModelPool, key: ModelKey, source: ModelSource) -> float:
        """Register, load and self-test one variant; return its median self-test run in ms."""
        pool.register(
            key,
            source.path,
            SessionConfig(intra_op_threads=self.config.threads),
            engine=self._engine(source),
        )
        self._keys.append(key)
        with pool.acquire(key) as model:
            if not self.inputs:
                self.inputs, self.outputs = model.inputs, model.outputs
                self.provider = model.provider
                self.platform = model.info.platform
            elif (model.inputs, model.outputs) != (self.inputs, self.outputs):
                raise ConflictError(
                    f"variant {source.variant!r} of {self.where} has inputs/outputs "
                    f"{[s.to_dict() for s in model.inputs + model.outputs]}, unlike the "
                    f"{DEFAULT_VARIANT!r} variant's "
                    f"{[s.to_dict() for s in self.inputs + self.outputs]}",
                    hint="every variant of a version must take and give the same tensors",
                )
            feeds = self_test_feeds(self.inputs)
            self._self_test_size = sum(f.size for f in feeds.values())
            timings = []
            try:
                for _ in range(_SELF_TEST_RUNS):
                    started = time.perf_counter()
                    model.run(feeds)
                    timings.append((time.perf_counter() - started) * 1000.0)
            except EdgeError as exc:
                raise ConversionError(
                    f"variant {source.variant!r} of {self.where} ({source.path}) failed its "
                    f"self-test input: {exc.message}",
                    hint="check the model runs on a zero input of its declared shape",
                ) from exc
        return statistics.median(timings[1:])  # the first run pays for lazy initialisation

    def _inline(self, self_test_ms: float) -> bool:
        """May requests run on the event loop itself (see :meth:`infer`)?

        Handing a request to a worker thread and back costs two thread wake-ups (tens of us
        each on the machine in docs/benchmarks.md); for a model that runs in less than that,
        the hop costs more than the work. Only when nothing needs the worker: no batching, a
        single variant (the load policy reads queue delay, which inline runs do not have), no
        memory budget (an evicted model must never be reloaded on the loop), and a self-test
        run below ``inline_below_ms``. A slower model runs in the batcher's thread, so the
        loop keeps answering other requests (health, 429s) meanwhile.
        """
        c = self.config
        return (
            c.max_batch == 1
            and c.memory_budget_mb is None
            and len(self.sources) == 1
            and self_test_ms < c.inline_below_ms
        )

    def _batcher(self, pool: ModelPool, key: ModelKey) -> DynamicBatcher:
        # A fixed leading axis cannot be concatenated, so such a model runs one request at a time.
        batchable = all(s.shape and s.shape[0] is None for s in self.inputs)
        max_batch = self.config.max_batch if batchable else 1
        return DynamicBatcher(
            pool.runner(key),
            max_batch=max_batch,
            max_delay_ms=self.config.max_delay_ms if max_batch > 1 else 0.0,
            max_queue=self.config.max_queue,
            name=f"{self.name}:{self.version}",
        )

    def pick_variant(self) -> str:
        """The variant to run the next request on."""
        if self.power is not None:
            return self.power.variant
        if self.switch is None:
            return next(iter(self.variants))
        return self.switch.variant

    async def infer(self, feeds: dict[str, np.ndarray[Any, Any]]) -> Result:
        """Run one request (the caller holds the version: :meth:`hold`).

        A request to an inline variant that is no larger than the self-test input runs right
        here, on the event loop, and never waits in a queue; any other goes through the
        variant's dynamic batcher (a worker thread).
        """
        name = self.pick_variant()
        variant = self.variants[name]
        # No larger than the self-test input, so no slower than the run that was timed.
        if variant.inline and self.runs_inline(feeds):
            # One step back to the loop first: requests that arrived meanwhile reach the
            # admission gate and are counted (or refused with 429) instead of piling up unseen
            # in the loop's ready queue while inline runs hold it.
            await asyncio.sleep(0)
            started = time.perf_counter()
            outputs = variant.run(feeds)
            self.inline_runs[name] += 1
            ms = (time.perf_counter() - started) * 1000.0
            first = next(iter(feeds.values()))
            rows = first.shape[0] if first.ndim else 1
            result = Result(outputs, name, 0.0, ms, rows)
        else:
            try:
                answer: BatchResult = await variant.batcher.submit(feeds)
            except ConflictError as exc:  # the batcher is stopping: this version is retiring
                raise NotReadyError(
                    f"{self.where} is shutting down: {exc.message}",
                    retry_after_s=1,
                    hint="retry: the model's other versions, or its next one, will answer",
                ) from exc
            result = Result(
                answer.outputs, name, answer.queue_ms, answer.inference_ms, answer.batch_size
            )
        if self.switch is not None:
            self.switch.observe(result.queue_ms)
        return result

    def run_counts(self) -> dict[str, int]:
        """Engine runs per variant so far (batches, and inline runs)."""
        return {
            name: variant.batcher.stats().batches + self.inline_runs[name]
            for name, variant in self.variants.items()
        }

    @contextlib.contextmanager
    def hold(self) -> Any:
        """Count a request as using this version until the block ends."""
        self.in_flight += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def retire(self, pool: ModelPool, grace_s: float) -> None:
        """DRAINING until the last holder finished (at most ``grace_s``), then RETIRED."""
        self.state = VersionState.DRAINING
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        await self._release(pool)
        self.state = VersionState.RETIRED

    async def _release(self, pool: ModelPool) -> None:
        for variant in self.variants.values():
            with contextlib.suppress(EdgeError):
                await variant.batcher.stop(drain=True)
        for key in self._keys:
            await _remove(pool, key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "state": self.state.value,
            "variants": [
                {**v.source.to_dict(), "inline": v.inline, "self_test_ms": v.self_test_ms}
                for v in self.variants.values()
            ],
            "provider": self.provider,
            "in_flight": self.in_flight,
            "error": self.error,
            "monitor": self.watch.status,
        }


async def _remove(pool: ModelPool, key: ModelKey, tries: int = 100) -> None:
    """Remove ``key`` from the pool; a run that timed out may still hold it for a moment."""
    for _ in range(tries):
        try:
            await asyncio.to_thread(pool.remove, key)
            return
        except ConflictError:
            await asyncio.sleep(0.05)
        except EdgeError:
            return  # not registered (never loaded): nothing to release


def self_test_feeds(specs: Sequence[TensorSpec]) -> dict[str, np.ndarray[Any, Any]]:
    """Zeros of each input's shape, free axes set to 1: the smallest input a model must take."""
    return {s.name: np.zeros([d or 1 for d in s.shape], dtype=s.dtype) for s in specs}
