"""MQTT sensor routes as text, parsed and checked without a broker (pure; no I/O).

A route, in the spirit of Azure IoT Edge's routes without the cloud lock-in::

    [NAME:] FROM <topic filter> INTO <model> THEN <topic template>

    vib:  FROM sensors/+/vibration INTO anomaly-ae THEN results/{topic[1]}/{model}
    FROM plant/# INTO digits-cnn:2 THEN out/{topic}

- keywords are case-insensitive; tokens are separated by white space (so topics with spaces
  cannot be routed);
- the topic filter follows MQTT 3.1.1 section 4.7: ``+`` matches one level, ``#`` the rest and only
  as the last level;
- the model is a model name, optionally ``name:version``;
- the template may hold ``{topic}`` (the source topic), ``{topic[N]}`` (its level N, 0-based,
  negative from the end), ``{model}`` and ``{route}``; it must not hold ``+`` or ``#``.

A route file holds one route per line; blank lines and lines starting with ``#`` are ignored.
Routes without a name are called ``route1``, ``route2``, ... in file order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeloop.core.errors import ConfigError, DataError

GRAMMAR = "[NAME:] FROM <topic filter> INTO <model> THEN <topic template>"
EXAMPLE = "FROM sensors/+/temp INTO my-model THEN results/{topic[1]}"
_HINT = f"write a route as {GRAMMAR}, e.g. {EXAMPLE!r}"
_TEMPLATE_HINT = (
    "THEN templates hold {topic}, {topic[N]}, {model}, {route} and no wildcards "
    f"(results go to one topic); grammar: {GRAMMAR}"
)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_MODEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+)?")
_FIELD = re.compile(r"\{(topic|model|route)(?:\[(-?\d+)\])?\}")
_KEYWORDS = ("FROM", "INTO", "THEN")


@dataclass(frozen=True, slots=True)
class Field:
    """One placeholder of a template: ``name`` and, for ``topic``, an optional level index."""

    name: str
    index: int | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One parsed route; build it with :func:`parse_route`."""

    name: str
    source: str  # the MQTT topic filter
    model: str
    template: str
    parts: tuple[str | Field, ...]

    def matches(self, topic: str) -> bool:
        """Whether a message published on ``topic`` is for this route."""
        return topic_matches(self.source, topic)

    def render(self, topic: str) -> str:
        """The THEN topic for a message that came in on ``topic``.

        Raises:
            DataError: ``{topic[N]}`` names a level the topic does not have.
        """
        levels = topic.split("/")
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part.name == "model":
                out.append(self.model)
            elif part.name == "route":
                out.append(self.name)
            elif part.index is None:
                out.append(topic)
            elif -len(levels) <= part.index < len(levels):
                out.append(levels[part.index])
            else:
                raise DataError(
                    f"route {self.name!r}: template {self.template!r} takes level {part.index} "
                    f"of topic {topic!r}, which has {len(levels)} levels",
                    hint="fix the route's THEN template or the publisher's topic",
                )
        return "".join(out)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching (3.1.1 section 4.7); wildcards never match a leading ``$``."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


def check_filter(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT topic filter, or ``None`` when it is."""
    if not topic_filter:
        return "it is empty"
    if "\x00" in topic_filter:
        return "it holds a NUL character"
    if len(topic_filter.encode()) > 65535:
        return "it is longer than 65535 bytes"
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"'#' must be a whole level and the last one (level {i} is {level!r})"
        if "+" in level and level != "+":
            return f"'+' must be a whole level (level {i} is {level!r})"
    return None


def parse_route(text: str, name: str | None = None) -> RouteSpec:
    """Parse one route line.

    Raises:
        ConfigError: naming the bad token, its position and the grammar.
    """
    tokens = text.split()
    where = f"route {text.strip()!r}"
    if tokens and tokens[0].endswith(":") and tokens[0].upper() != "FROM:":
        label = tokens.pop(0)[:-1]
        if name is not None and label != name:
            raise ConfigError(f"{where} is named both {name!r} and {label!r}", hint=_HINT)
        name = label
    name = "route" if name is None else name
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: bad route name {name!r}", hint=_HINT)
    if len(tokens) != 6:
        raise ConfigError(
            f"{where} has {len(tokens)} tokens after its name, expected 6 "
            f"({GRAMMAR}; topics and templates cannot hold spaces)",
            hint=_HINT,
        )
    for position, keyword in zip((0, 2, 4), _KEYWORDS, strict=True):
        if tokens[position].upper() != keyword:
            raise ConfigError(
                f"{where}: expected {keyword} as token {position + 1}, got {tokens[position]!r}",
                hint=_HINT,
            )
    source, model, template = tokens[1], tokens[3], tokens[5]
    if (why := check_filter(source)) is not None:
        raise ConfigError(f"{where}: topic filter {source!r} is invalid: {why}", hint=_HINT)
    if not _MODEL.fullmatch(model):
        raise ConfigError(
            f"{where}: model {model!r} is not a model name or name:version", hint=_HINT
        )
    return RouteSpec(name, source, model, template, _parse_template(template, where))


def _parse_template(template: str, where: str) -> tuple[str | Field, ...]:
    parts: list[str | Field] = []
    pos = 0
    for m in _FIELD.finditer(template):
        parts.append(template[pos : m.start()])
        index = None if m.group(2) is None else int(m.group(2))
        if index is not None and m.group(1) != "topic":
            raise ConfigError(
                f"{where}: only {{topic[N]}} takes an index, not {m.group(0)!r}",
                hint=_TEMPLATE_HINT,
            )
        parts.append(Field(m.group(1), index))
        pos = m.end()
    parts.append(template[pos:])
    literal = "".join(p for p in parts if isinstance(p, str))
    for bad in ("{", "}", "+", "#", "\x00"):
        if bad in literal:
            raise ConfigError(
                f"{where}: THEN template {template!r} holds {bad!r} outside a placeholder",
                hint=_TEMPLATE_HINT,
            )
    if not template:
        raise ConfigError(f"{where}: the THEN template is empty", hint=_HINT)
    return tuple(p for p in parts if p != "")


def parse_routes(routes: str | Iterable[str] | Mapping[str, str]) -> tuple[RouteSpec, ...]:
    """Parse a route file's text, a list of lines, or a ``{name: route}`` mapping.

    Raises:
        ConfigError: a bad route (see :func:`parse_route`) or two routes with one name.
    """
    if isinstance(routes, Mapping):
        specs = [parse_route(text, name) for name, text in routes.items()]
    else:
        lines = routes.splitlines() if isinstance(routes, str) else list(routes)
        wanted = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        specs = []
        for i, line in enumerate(wanted, start=1):
            named = line.split(maxsplit=1)[0].endswith(":")
            specs.append(parse_route(line, None if named else f"route{i}"))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"two routes are named {spec.name!r}", hint="give each a name")
        seen.add(spec.name)
    return tuple(specs)
