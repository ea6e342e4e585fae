"""The served catalog: every model, its live versions, its routing and its admission gate.

Hot swap is :meth:`Catalog.reload`: the model's origin is scanned again, each new or changed
version is loaded and self-tested *while the old versions keep serving*, and only then is the
model's version table replaced, in one assignment on the event loop. Requests that already
picked an old version hold it (:meth:`ServedVersion.hold`); the old version is retired in the
background once they finished. A version that fails to load is never switched to.

Everything here runs on the event loop's thread; loads run in worker threads.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.runtime.pool import ModelPool
from edgeloop.serving.admission import Gate
from edgeloop.serving.cascade import check_pair
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.errors import NotReadyError
from edgeloop.serving.metering import PowerSampler
from edgeloop.serving.metrics import (
    BatcherFigures,
    PoolFigures,
    RuntimeFigures,
    SwitchFigures,
)
from edgeloop.serving.power import PowerControl
from edgeloop.serving.repository import ModelSource, Origin
from edgeloop.serving.routing import Router, Routing
from edgeloop.serving.served import ServedVersion, VersionState
from edgeloop.serving.watch import Sink, Watch

if TYPE_CHECKING:
    from edgeloop.bench.power import PowerProbe

_LOADING_RETRY_S = 2  # a model of a few MB loads in well under that


@dataclass(frozen=True, slots=True)
class SwapReport:
    """What one reload did: versions loaded (new or changed), retired, and left as they were."""

    model: str
    loaded: tuple[str, ...]
    retired: tuple[str, ...]
    unchanged: tuple[str, ...]
    serving: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "loaded": list(self.loaded),
            "retired": list(self.retired),
            "unchanged": list(self.unchanged),
            "serving": self.serving,
        }


class ServedModel:
    """One model name: its versions by name, its routing, and its bounded queue."""

    def __init__(self, origin: Origin, config: ServerConfig, routing: Routing) -> None:
        self.name = origin.name
        self.origin = origin
        self.routing = routing
        self.versions: dict[str, ServedVersion] = {}
        self.gate = Gate(self.name, config.max_queue)
        self.shadow_gate = Gate(self.name, config.shadow_queue)
        self.swap_lock = asyncio.Lock()
        self.power = (
            PowerControl(self.name, config.power_budget_w, config.variant_power)
            if config.power_budget_w is not None
            else None
        )

    @property
    def ready_versions(self) -> list[str]:
        ready = [v for v, s in self.versions.items() if s.state is VersionState.READY]
        return sorted(ready, key=int)

    @property
    def latest(self) -> str | None:
        ready = self.ready_versions
        return ready[-1] if ready else None

    def version(self, version: str) -> ServedVersion:
        """A READY version by name.

        Raises:
            NotFoundError: no such version (the message lists the served ones).
            NotReadyError: it exists but is not READY.
        """
        served = self.versions.get(version)
        if served is None:
            raise NotFoundError(
                f"model {self.name!r} has no version {version[:40]!r}; served versions: "
                f"{', '.join(sorted(self.versions, key=int)) or 'none'}",
                hint=f"GET /v2/models/{self.name} lists the model's versions",
            )
        if served.state is not VersionState.READY:
            raise NotReadyError(
                f"{served.where} is {served.state.value}",
                retry_after_s=_LOADING_RETRY_S,
                hint="retry after Retry-After seconds",
            )
        return served

    def resolve(
        self, version: str | None, key: str | None, router: Router
    ) -> tuple[ServedVersion, ServedVersion | None]:
        """The version that answers and the shadow that gets a copy (routed requests only).

        Raises:
            NotFoundError, NotReadyError: as :meth:`version`; NotReadyError also when no
                version is ready.
        """
        if version is not None:
            return self.version(version), None
        latest = self.latest
        if latest is None:
            raise NotReadyError(
                f"model {self.name!r} has no version ready yet",
                retry_after_s=_LOADING_RETRY_S,
                hint="wait for GET /v2/models/{name}/ready to answer 200",
            )
        chosen = router.choose(self.routing, latest, key)
        primary = self.versions.get(chosen)
        if primary is None or primary.state is not VersionState.READY:
            primary = self.versions[latest]  # a split arm gone since: the latest answers
        shadow = self.versions.get(self.routing.shadow or "")
        if shadow is not None and (shadow is primary or shadow.state is not VersionState.READY):
            shadow = None
        return primary, shadow


class Catalog:
    """Every served model, the shared model pool, and hot swap.

    ``power_probe`` is the meter that measures variants under a power budget (None: the one
    :func:`edgeloop.bench.power.detect_power_probe` finds at start).
    """

    def __init__(
        self,
        origins: Sequence[Origin],
        config: ServerConfig,
        pool: ModelPool | None = None,
        power_probe: PowerProbe | None = None,
    ) -> None:
        self.config = config
        self.pool = pool if pool is not None else ModelPool(config.memory_budget_mb)
        self.models = {
            o.name: ServedModel(o, config, config.routing.get(o.name, Routing())) for o in origins
        }
        self._check_names("routing", set(config.routing))
        self._check_names("--cascade", set(config.cascades))
        self._check_names("--cascade", {s.large for s in config.cascades.values() if s.large})
        self._check_names("--variant-power", {s.model for s in config.variant_power if s.model})
        self.power_probe = power_probe
        self.sampler: PowerSampler | None = None
        self.meter = "no power budget"  # the meter's source, or why there is none
        self.started = False
        self.stopping = False
        self._retiring: set[asyncio.Task[None]] = set()
        # Where each watched version's alarms go (the edge agent adds its outbox).
        self.monitor_sinks: list[Sink] = []

    def _check_names(self, what: str, names: set[str]) -> None:
        unknown = sorted(names - set(self.models))
        if unknown:
            raise ConfigError(
                f"{what} names model(s) {', '.join(map(repr, unknown))}, which are not served; "
                f"served: {', '.join(map(repr, self.models))}",
                hint="name models as they are served (the file stem, the folder, or --name)",
            )

    @property
    def ready(self) -> bool:
        """Started, not stopping, and every model has a READY version."""
        if not self.started or self.stopping:
            return False
        return all(m.latest is not None for m in self.models.values())

    def model(self, name: str) -> ServedModel:
        """A served model by name.

        Raises:
            NotFoundError: not served (the message lists the served models).
        """
        model = self.models.get(name)
        if model is None:
            raise NotFoundError(
                f"model {name[:80]!r} is not served; served models: "
                f"{', '.join(map(repr, self.models)) or 'none'}",
                hint="GET /v2/repository/index lists them",
            )
        return model

    async def start(self) -> list[SwapReport]:
        """Load every model's versions, check the routing names served versions.

        Raises:
            What loading raises (the first model that fails); ConfigError for routing that
            names a version that is not served.
        """
        reports = [await self.reload(name) for name in self.models]
        for model in self.models.values():
            missing = [v for v in model.routing.versions() if v not in model.versions]
            if missing:
                raise ConfigError(
                    f"routing of model {model.name!r} names version(s) {missing}, which are not "
                    f"served; served: {model.ready_versions}",
                    hint="fix --ab / --shadow, or add the version folders",
                )
        self._check_cascades()
        await self._start_meter()
        self.started = True
        return reports

    def _check_cascades(self) -> None:
        """Refuse cascades whose models cannot share rows (see :func:`check_pair`)."""
        for small, spec in self.config.cascades.items():
            specs = self._tensors(small)
            if spec.large is not None:
                specs += self._tensors(spec.large)
            check_pair(small, spec.large, specs)

    def _tensors(self, name: str) -> tuple[tuple[Any, ...], ...]:
        model = self.models[name]
        served = model.versions[model.latest or ""]
        return (served.inputs, served.outputs)

    async def _start_meter(self) -> None:
        if not any(m.power is not None for m in self.models.values()):
            return
        from edgeloop.bench.power import NullProbe, detect_power_probe  # off the light path

        probe = self.power_probe
        if probe is None:
            probe = await asyncio.to_thread(detect_power_probe)
        if isinstance(probe, NullProbe):
            self.meter = f"none: {probe.reason}; the figures stay stated"
            return
        self.meter = type(probe).__name__
        self.sampler = PowerSampler(probe, self.config.power_interval_s, self.governed)
        await self.sampler.start()

    def governed(self) -> Iterator[ServedVersion]:
        """Every version whose variant a power budget picks."""
        for model in self.models.values():
            for version in model.versions.values():
                if version.power is not None and version.state is VersionState.READY:
                    yield version

    async def reload(self, name: str) -> SwapReport:
        """Hot swap: scan the model's origin, load new or changed versions, then switch.

        Raises:
            NotFoundError: the model is not served, or its files are gone.
            What loading raises; the old versions then keep serving unchanged.
        """
        model = self.model(name)
        async with model.swap_lock:
            sources = await asyncio.to_thread(model.origin.scan)
            wanted = _by_version(sources)
            old = model.versions
            fresh = {
                v: ServedVersion(srcs, self.config, model.power, self.monitor_sinks)
                for v, srcs in wanted.items()
                if v not in old or old[v].stamps != {s.variant: s.stamp for s in srcs}
            }
            await self._load_all(fresh.values())
            model.versions = {v: fresh.get(v) or old[v] for v in wanted}  # the switch
            retired = [old[v] for v in old if model.versions.get(v) is not old[v]]
            for version in retired:
                self._retire(version)
        return SwapReport(
            model=name,
            loaded=tuple(sorted(fresh, key=int)),
            retired=tuple(v.version for v in retired),
            unchanged=tuple(sorted(set(wanted) - set(fresh), key=int)),
            serving=model.latest,
        )

    async def place(self, origin: Origin) -> SwapReport:
        """Serve ``origin`` under its name: a new model, or a served one from another place.

        A new model answers "loading" (503 with Retry-After) until it is loaded; a served one
        is hot-swapped as by :meth:`reload` (requests in flight finish on the old version).
        The edge agent switches between its A/B slots with it.

        Raises:
            What :meth:`reload` raises; the model then keeps serving from where it did.
        """
        model = self.models.get(origin.name)
        if model is None:
            fresh = ServedModel(origin, self.config, Routing())
            self.models[origin.name] = fresh
            try:
                return await self.reload(origin.name)
            except BaseException:
                del self.models[origin.name]
                raise
        previous, model.origin = model.origin, origin
        try:
            return await self.reload(origin.name)
        except BaseException:
            model.origin = previous
            raise

    async def remove(self, name: str) -> SwapReport:
        """Stop serving ``name`` and forget it (requests in flight still finish).

        Raises:
            NotFoundError: the model is not served.
        """
        report = await self.unload(name)
        self.models.pop(name, None)
        return report

    async def unload(self, name: str) -> SwapReport:
        """Stop serving every version of ``name`` (requests in flight still finish).

        Raises:
            NotFoundError: the model is not served.
        """
        model = self.model(name)
        async with model.swap_lock:
            retired, model.versions = list(model.versions.values()), {}
            for version in retired:
                self._retire(version)
        return SwapReport(name, (), tuple(v.version for v in retired), (), None)

    async def _load_all(self, versions: Iterable[ServedVersion]) -> None:
        loaded: list[ServedVersion] = []
        try:
            for version in versions:
                await version.load(self.pool)
                loaded.append(version)
        except BaseException:
            for version in loaded:
                await version.retire(self.pool, grace_s=0.1)
            raise

    def _retire(self, version: ServedVersion) -> None:
        task = asyncio.get_running_loop().create_task(
            version.retire(self.pool, self.config.swap_grace_s)
        )
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def stop(self) -> None:
        """Refuse new requests, let the ones in flight finish, release every model."""
        self.stopping = True
        if self.sampler is not None:
            await self.sampler.stop()
        for model in self.models.values():
            for version in model.versions.values():
                self._retire(version)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        self.pool.close()

    def figures(self) -> RuntimeFigures:
        """The runtime's counters, labelled by model, version and variant, for /metrics."""
        batchers, switches, ready, labels = [], [], [], {}
        for model in self.models.values():
            for version in model.versions.values():
                ready.append((model.name, version.version, version.state is VersionState.READY))
                for name, variant in version.variants.items():
                    labels[variant.key] = (model.name, version.version, name)
                    stats = variant.batcher.stats()
                    sizes = Counter(stats.batch_sizes)
                    sizes[1] += version.inline_runs[name]  # inline runs are batches of one
                    batchers.append(
                        BatcherFigures(
                            model.name, version.version, name,
                            stats.batches + version.inline_runs[name],
                            stats.retried_batches, stats.queue_depth,
                            tuple(sorted(sizes.items())),
                        )
                    )  # fmt: skip
                policy = version.power.switch if version.power is not None else version.switch
                if policy is not None:
                    s = policy.stats()
                    switches.append(
                        SwitchFigures(model.name, version.version, s.variant, s.switches, s.policy)
                    )
        pool = self.pool.stats()
        entries = [
            PoolFigures(*labels[m.key], m.loaded, m.size_mb, m.size_basis.value,
                        m.loads, m.unloads, m.evictions)
            for m in pool.models
            if m.key in labels
        ]  # fmt: skip
        admission = tuple((m.name, m.gate.in_flight, m.gate.limit) for m in self.models.values())
        return RuntimeFigures(
            tuple(batchers), tuple(entries), tuple(switches), tuple(ready), admission,
            pool.budget_mb,
        )  # fmt: skip

    def watches(self) -> list[Watch]:
        """The drift monitors of every READY version (for /metrics and the agent)."""
        return [
            v.watch
            for m in self.models.values()
            for v in m.versions.values()
            if v.state is VersionState.READY and v.watch.active
        ]

    def describe(self) -> list[dict[str, Any]]:
        """Every model version and its state (the repository index)."""
        return [
            {"name": m.name, "version": v.version, "state": v.state.value, "reason": v.error or ""}
            for m in self.models.values()
            for v in m.versions.values()
        ]


def _by_version(sources: Sequence[ModelSource]) -> Mapping[str, list[ModelSource]]:
    grouped: dict[str, list[ModelSource]] = defaultdict(list)
    for source in sources:
        grouped[source.version].append(source)
    return grouped
