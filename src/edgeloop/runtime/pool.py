"""A pool of loaded models under a memory budget: load on demand, evict least recently used.

- ``register`` names a model file under a :class:`ModelKey`; nothing loads yet.
- ``acquire(key)`` is a context manager yielding the loaded model; while it is held the model's
  reference count is above zero and it is never evicted. ``prefetch`` loads ahead of traffic.
- Before a load, idle models are evicted least recently used first until the budget holds the
  new one. Its size is the resident memory it took when it last loaded (the process RSS change
  across the load, :mod:`edgeloop.runtime.memory`); before its first load it is estimated as
  the file size times ``estimate_factor``, and reported as an estimate.
- Nothing can be evicted and the budget is too small: :class:`OverloadError` (answer 429/503).

Loads run one at a time, outside the pool's state lock: one at a time so that each RSS change
belongs to one model, outside the lock so requests to loaded models never wait for a load.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeloop.core.errors import ConfigError, ConflictError, NotFoundError, OverloadError
from edgeloop.runtime.engine import Feeds, LoadedModel, Outputs, SessionConfig
from edgeloop.runtime.engines import load_model
from edgeloop.runtime.memory import MB, RssDelta, measure_rss, release_free_memory
from edgeloop.runtime.residency import (
    ModelKey,
    ModelStats,
    PoolStats,
    Resident,
    SizeBasis,
    plan_evictions,
)

__all__ = ["ModelKey", "ModelPool", "ModelStats", "PoolStats", "SizeBasis"]

Loader = Callable[[Path, SessionConfig, str | None], LoadedModel]
# A first guess only; the measured size replaces it after the first load. ONNX Runtime holds
# the weights about once (a MatMul model with 20 MiB of weights measured 20.0 MiB resident on
# onnxruntime 1.31); 1.5x leaves room for kernels that pre-pack weights. The first load in a
# process also pays onnxruntime's one-time set-up (~25 MiB), which no factor should hide.
DEFAULT_ESTIMATE_FACTOR = 1.5


@dataclass(slots=True)
class _Entry:
    path: Path
    config: SessionConfig
    engine: str | None
    size_mb: float
    size_source: str
    size_basis: SizeBasis = SizeBasis.ESTIMATED
    model: LoadedModel | None = None
    loading: bool = False
    refs: int = 0
    last_used: int = 0
    loads: int = 0
    unloads: int = 0
    evictions: int = 0
    load_ms: float | None = None


def _close_all(models: list[LoadedModel]) -> None:
    """Close models and give their memory back to the kernel, so the process really shrinks."""
    for model in models:
        model.close()
    if models:
        release_free_memory()


class ModelPool:
    """Loaded models under ``memory_budget_mb`` (None: no limit, sizes still measured).

    Thread-safe. See the module docstring for the eviction rule.
    """

    def __init__(
        self,
        memory_budget_mb: float | None = None,
        loader: Loader = load_model,
        *,
        estimate_factor: float = DEFAULT_ESTIMATE_FACTOR,
    ) -> None:
        if memory_budget_mb is not None and not memory_budget_mb > 0:
            raise ConfigError(
                f"memory budget {memory_budget_mb} MB is not valid; expected a positive number",
                hint="leave --memory-budget-mb unset for no limit",
            )
        if not estimate_factor > 0:
            raise ConfigError(f"estimate_factor {estimate_factor} must be positive")
        self.budget_mb = memory_budget_mb
        self._loader = loader
        self._factor = estimate_factor
        self._entries: dict[ModelKey, _Entry] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._load_lock = threading.Lock()
        self._clock = itertools.count(1)
        self._failures = 0
        self._refused = 0

    def register(
        self,
        key: ModelKey,
        path: str | Path,
        config: SessionConfig | None = None,
        engine: str | None = None,
    ) -> None:
        """Name a model file under ``key`` without loading it.

        Raises:
            NotFoundError: ``path`` does not exist.
            ConflictError: ``key`` is registered with another file or settings.
        """
        file = Path(path)
        if not file.is_file():
            raise NotFoundError(f"model file {str(file)!r} does not exist", hint="check the path")
        config = config if config is not None else SessionConfig()
        size = file.stat().st_size * self._factor / MB
        source = f"estimate: file size x {self._factor}"
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                if (old.path, old.config, old.engine) != (file, config, engine):
                    raise ConflictError(
                        f"model {key} is already registered with {str(old.path)!r}",
                        hint="register the new file under a new version, or remove the old one",
                    )
                return
            self._entries[key] = _Entry(file, config, engine, size, source)

    @contextlib.contextmanager
    def acquire(self, key: ModelKey) -> Iterator[LoadedModel]:
        """Yield the loaded model for ``key``, loading it first if needed; hold it meanwhile.

        Raises:
            NotFoundError: ``key`` is not registered.
            OverloadError: loading it would exceed the budget and nothing idle can be evicted.
            Whatever the loader raises (UntrustedArtifactError, ConversionError, ...).
        """
        model = self._checkout(key, hold=True)
        try:
            yield model
        finally:
            self._release(key)

    def runner(self, key: ModelKey) -> Callable[[Feeds], Outputs]:
        """A function running ``key``'s model, holding it only for the run (for the batcher)."""

        def run(feeds: Feeds) -> Outputs:
            with self.acquire(key) as model:
                return model.run(feeds)

        return run

    def prefetch(self, key: ModelKey) -> ModelStats:
        """Load ``key`` now, ahead of traffic, without holding it; return its stats.

        Raises:
            The same errors as :meth:`acquire`.
        """
        self._checkout(key, hold=False)
        return self.model_stats(key)

    def unload(self, key: ModelKey) -> bool:
        """Unload ``key`` if loaded; False when it was not loaded.

        Raises:
            NotFoundError: ``key`` is not registered.
            ConflictError: requests are holding it.
        """
        with self._lock:
            entry = self._entry(key)
            if entry.refs:
                raise ConflictError(
                    f"model {key} is held by {entry.refs} request(s) and cannot be unloaded",
                    hint="retry after the requests finish",
                )
            model = self._detach(entry)
            if model is not None:
                entry.unloads += 1
        if model is None:
            return False
        _close_all([model])
        return True

    def remove(self, key: ModelKey) -> None:
        """Unload ``key`` and forget it (after a hot swap retired it).

        Raises:
            NotFoundError: ``key`` is not registered.
            ConflictError: requests are holding it.
        """
        self.unload(key)
        with self._lock:
            entry = self._entry(key)
            if entry.refs or entry.loading or entry.model is not None:
                raise ConflictError(f"model {key} came back into use while being removed")
            del self._entries[key]

    def loaded(self) -> list[ModelKey]:
        """Keys of the loaded models, least recently used first."""
        with self._lock:
            keys = [(e.last_used, k) for k, e in self._entries.items() if e.model is not None]
        return [k for _, k in sorted(keys)]

    def keys(self) -> list[ModelKey]:
        """Every registered key, sorted."""
        with self._lock:
            return sorted(self._entries)

    def model_stats(self, key: ModelKey) -> ModelStats:
        """Stats of one model.

        Raises:
            NotFoundError: ``key`` is not registered.
        """
        with self._lock:
            return self._stats_of(key, self._entry(key))

    def stats(self) -> PoolStats:
        """A consistent snapshot of every model's counters and the totals."""
        with self._lock:
            models = tuple(self._stats_of(k, e) for k, e in sorted(self._entries.items()))
            failures, refused = self._failures, self._refused
        return PoolStats(
            budget_mb=self.budget_mb,
            resident_mb=sum(m.size_mb for m in models if m.loaded),
            loads=sum(m.loads for m in models),
            unloads=sum(m.unloads for m in models),
            evictions=sum(m.evictions for m in models),
            refused=refused,
            load_failures=failures,
            models=models,
        )

    def close(self) -> None:
        """Unload every idle model; a model still held by a request stays loaded."""
        for key in self.loaded():
            with contextlib.suppress(ConflictError, NotFoundError):
                self.unload(key)

    # -- internals -------------------------------------------------------------------------

    def _entry(self, key: ModelKey) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            known = ", ".join(str(k) for k in sorted(self._entries)) or "none"
            raise NotFoundError(
                f"model {key} is not in the pool; registered: {known}",
                hint="register the model file first (or check the name and version)",
            )
        return entry

    def _stats_of(self, key: ModelKey, e: _Entry) -> ModelStats:
        return ModelStats(
            key=key,
            path=str(e.path),
            loaded=e.model is not None,
            refs=e.refs,
            size_mb=e.size_mb,
            size_basis=e.size_basis,
            size_source=e.size_source,
            loads=e.loads,
            unloads=e.unloads,
            evictions=e.evictions,
            load_ms=e.load_ms,
            provider=None if e.model is None else e.model.provider,
        )

    def _checkout(self, key: ModelKey, *, hold: bool) -> LoadedModel:
        with self._lock:
            while True:
                entry = self._entry(key)
                if entry.model is not None:
                    entry.refs += int(hold)
                    entry.last_used = next(self._clock)
                    return entry.model
                if not entry.loading:
                    entry.loading = True
                    break
                self._changed.wait()  # another thread is loading this model
        return self._load(key, entry, hold=hold)

    def _load(self, key: ModelKey, entry: _Entry, *, hold: bool) -> LoadedModel:
        try:
            with self._load_lock:
                self._make_room(key, entry)
                started = time.perf_counter()
                model, delta = measure_rss(
                    lambda: self._loader(entry.path, entry.config, entry.engine)
                )
                elapsed_ms = (time.perf_counter() - started) * 1000.0
        except BaseException as exc:
            with self._lock:
                entry.loading = False
                if isinstance(exc, OverloadError):
                    self._refused += 1
                else:
                    self._failures += 1
                self._changed.notify_all()
            raise
        with self._lock:
            self._record_load(entry, model, delta, elapsed_ms)
            entry.refs += int(hold)
            self._changed.notify_all()
            # The measured size can exceed the estimate: evict idle models until back in budget.
            spill = self._plan_trim(key)
        _close_all(spill)
        return model

    def _plan_trim(self, keep: ModelKey) -> list[LoadedModel]:
        if self.budget_mb is None:
            return []
        residents = self._residents(leave_out=keep)
        victims = plan_evictions(residents, self._entries[keep].size_mb, self.budget_mb)
        # None: even evicting every idle model leaves it over; evict them all then.
        keys = victims if victims is not None else [r.key for r in residents if r.refs == 0]
        return [self._evict(self._entries[k]) for k in keys]

    def _record_load(self, entry: _Entry, model: LoadedModel, delta: RssDelta, ms: float) -> None:
        entry.model = model
        entry.loading = False
        entry.loads += 1
        entry.load_ms = ms
        entry.last_used = next(self._clock)
        if delta.mb is not None:
            # Freed pages of earlier work can make a small load read negative: clamp at zero.
            entry.size_mb = max(delta.mb, 0.0)
            entry.size_basis = SizeBasis.MEASURED
            entry.size_source = delta.source
        else:
            entry.size_source = f"{entry.size_source} ({delta.source})"

    def _make_room(self, key: ModelKey, entry: _Entry) -> None:
        if self.budget_mb is None:
            return
        with self._lock:
            residents = self._residents()
            victims = plan_evictions(residents, entry.size_mb, self.budget_mb)
            if victims is None:
                raise self._overload(key, entry, residents)
            models = [self._evict(self._entries[v]) for v in victims]
        _close_all(models)

    def _residents(self, leave_out: ModelKey | None = None) -> list[Resident]:
        return [
            Resident(k, e.size_mb, e.last_used, e.refs)
            for k, e in self._entries.items()
            if e.model is not None and k != leave_out
        ]

    def _evict(self, entry: _Entry) -> LoadedModel:
        model = self._detach(entry)
        if model is None:  # planning only lists loaded models, under the same lock
            raise ConflictError("an eviction victim was not loaded")
        entry.evictions += 1
        entry.unloads += 1
        return model

    @staticmethod
    def _detach(entry: _Entry) -> LoadedModel | None:
        model, entry.model = entry.model, None
        return model

    def _overload(self, key: ModelKey, entry: _Entry, residents: list[Resident]) -> OverloadError:
        held = [r for r in residents if r.refs]
        held_text = ", ".join(f"{r.key} ({r.size_mb:.1f} MB, {r.refs} refs)" for r in held)
        used = sum(r.size_mb for r in residents)
        alone = self.budget_mb is not None and entry.size_mb > self.budget_mb
        return OverloadError(
            f"loading model {key} needs {entry.size_mb:.1f} MB ({entry.size_source}) but the "
            f"memory budget is {self.budget_mb:.1f} MB with {used:.1f} MB loaded; models held "
            f"by requests: {held_text or 'none'}",
            hint="raise --memory-budget-mb: this model alone is larger than the budget"
            if alone
            else "retry when requests finish, or raise --memory-budget-mb",
        )

    def _release(self, key: ModelKey) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.refs > 0:
                entry.refs -= 1
                entry.last_used = next(self._clock)
