"""The agent's MQTT routes (``edgeloop agent --route ... --mqtt URL``) on its own inference path.

:func:`service_infer` makes the ``infer(model, features)`` callable of
:class:`~edgeloop.agent.routes.RouteRunner` from the agent's
:class:`~edgeloop.serving.service.InferenceService`: the same catalog, admission gate, batching
runtime and deadline as ``POST /v2/models/{name}/infer``, so a route's result carries the version
the agent serves at that moment (and follows an update the moment the catalog swaps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edgeloop.agent.route_spec import RouteSpec, parse_routes
from edgeloop.agent.routes import SOURCE_ID, BrokerConfig, Infer, Labels, RouteRunner
from edgeloop.core.errors import ConfigError, DataError
from edgeloop.serving.served import ServedVersion
from edgeloop.serving.service import InferenceService, Ticket


def broker_config(url: str, client_id: str) -> BrokerConfig:
    """``mqtt://[user:password@]host[:port]`` as a :class:`BrokerConfig` (``client_id`` kept
    across restarts so the broker keeps the session's QoS 1 messages).

    Raises:
        ConfigError: not an ``mqtt://`` URL, or a bad port.
    """
    parts = urlsplit(url)
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ConfigError(f"--mqtt {url!r}: {exc}", hint="e.g. mqtt://127.0.0.1:1883") from exc
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError(
            f"--mqtt {url!r} is not an mqtt://host[:port] URL",
            hint="e.g. --mqtt mqtt://127.0.0.1:1883 (TLS brokers are not supported yet)",
        )
    return BrokerConfig(
        host=parts.hostname,
        port=port,
        client_id=client_id,
        username=parts.username,
        password=parts.password,
    )


def service_infer(service: InferenceService) -> Infer:
    """``infer(model, features) -> (first output, model_version)`` through ``service``.

    Features of one sample (the input's per-sample shape) get a batch axis of 1; a batch is
    passed as is. Raises what the service raises (NotFoundError for a model not served here,
    DataError for a model with several inputs or features that do not fit).
    """

    async def infer(model: str, features: np.ndarray[Any, Any]) -> tuple[Any, Any]:
        first: list[str] = []

        def make_feeds(served: ServedVersion) -> dict[str, np.ndarray[Any, Any]]:
            if len(served.inputs) != 1:
                raise DataError(
                    f"{served.where} has {len(served.inputs)} inputs; a route feeds one",
                    hint="route models with a single input",
                )
            spec = served.inputs[0]
            array = np.asarray(features)
            if array.ndim == len(spec.shape) - 1:
                array = array.reshape((1, *array.shape))
            first.append(served.outputs[0].name)
            return {spec.name: array.astype(spec.dtype, copy=False)}

        name, _, version = model.partition(":")  # a route may pin ``name:version``
        rid = SOURCE_ID.get()  # the message's id: its answer can be labelled by it
        answer = await service.infer(Ticket("mqtt"), name, version or None, None, make_feeds, rid)
        return answer.result.outputs[first[0]], answer.version

    return infer


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """The parsed ``--route`` table and the broker it runs against."""

    routes: tuple[RouteSpec, ...]
    broker: BrokerConfig

    @classmethod
    def parse(cls, routes: list[str], mqtt: str, client_id: str) -> RouteSettings | None:
        """None when no route is given.

        Raises:
            ConfigError: a bad route or broker URL.
        """
        if not routes:
            return None
        return cls(parse_routes(routes), broker_config(mqtt, client_id))

    def runner(self, service: InferenceService, labels: Labels | None = None) -> RouteRunner:
        """Raises MissingDependencyError: the ``mqtt`` extra is missing."""
        return RouteRunner(self.routes, service_infer(service), self.broker, labels=labels)
