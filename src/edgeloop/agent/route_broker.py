"""How the MQTT route runner (:mod:`edgeloop.agent.routes`) reaches its broker: the validated
settings, the one client (MQTT v5, persistent session) and a result's publish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeloop.agent.route_message import Outgoing
from edgeloop.agent.route_spec import check_filter
from edgeloop.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """How the runner talks to the broker; validated on construction."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None  # stable across restarts: the broker keeps the session
    deadletter_prefix: str = "edgeloop"
    qos: int = 1
    keepalive_s: int = 30
    session_expiry_s: int = 3600
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 10.0
    max_in_flight: int = 64  # per route: messages inferred ahead of the one being published
    publish_timeout_s: float = 10.0  # no PUBACK within this: the connection is treated as lost
    max_payload_bytes: int = 1 << 20  # larger messages are dead-lettered (their first bytes kept)
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.qos not in (0, 1, 2):
            problems.append(f"qos {self.qos} is not 0, 1 or 2")
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} is not 1..65535")
        if min(self.max_in_flight, self.keepalive_s, self.max_payload_bytes) < 1:
            problems.append("max_in_flight, keepalive_s and max_payload_bytes must be >= 1")
        if self.session_expiry_s < 0:
            problems.append(f"session_expiry_s {self.session_expiry_s} is negative")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            problems.append("need 0 < reconnect_initial_s <= reconnect_max_s")
        if check_filter(self.deadletter_prefix) is not None or any(
            c in self.deadletter_prefix for c in "+#"
        ):
            problems.append(f"dead-letter prefix {self.deadletter_prefix!r} is not a topic")
        if problems:
            raise ConfigError("MQTT settings: " + "; ".join(problems))

    @property
    def deadletter_topic(self) -> str:
        return f"{self.deadletter_prefix.rstrip('/')}/deadletter"


def new_client(mqtt: Any, config: BrokerConfig, client_id: str) -> Any:
    """The aiomqtt client every reconnect of one runner uses (``mqtt``: the aiomqtt module)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect.SessionExpiryInterval = config.session_expiry_s
    return mqtt.Client(
        config.host,
        config.port,
        identifier=client_id,
        protocol=mqtt.ProtocolVersion.V5,
        clean_start=False,  # resume the broker's session: it kept our QoS 1 messages
        properties=connect,
        keepalive=config.keepalive_s,
        username=config.username,
        password=config.password,
        timeout=config.publish_timeout_s,
    )


async def publish(client: Any, out: Outgoing, qos: int) -> None:
    """Hand one result (or dead letter) to paho as JSON, with the message's correlation data."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = "application/json"
    if out.correlation is not None:
        props.CorrelationData = out.correlation
    await client.publish(out.topic, out.payload, qos=qos, properties=props)
