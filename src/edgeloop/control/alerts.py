"""Fleet alert rules and their evaluation: pure values and functions, no I/O.

Three kinds of rule (docs/fleet-monitoring.md):

* ``drifting_nodes``: at least ``k`` nodes of one model version drifting, counting nodes heard
  from within ``window_s`` (subject ``model:version``; figures: drifting, nodes, k);
* ``accuracy_floor``: a node's estimated accuracy of a version below ``floor`` (subject
  ``model:version@node``, heard from within ``window_s``);
* ``node_silent``: a node not heard from (report or telemetry) for ``silent_s`` (subject the
  node id).

:func:`evaluate` gives what holds now; :func:`reconcile` turns it, with the alerts still firing,
into the alerts to open, keep (de-duplicated: one per rule and subject while firing) and resolve.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from edgeloop.control.fleet import iso
from edgeloop.control.monitoring import FleetRow
from edgeloop.core.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RuleKind(StrEnum):
    DRIFTING_NODES = "drifting_nodes"
    ACCURACY_FLOOR = "accuracy_floor"
    NODE_SILENT = "node_silent"


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule; only the fields of its kind are read."""

    name: str
    kind: RuleKind
    k: int = 1
    window_s: float = 600.0
    floor: float = 0.8
    silent_s: float = 300.0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"alert rule name {self.name!r} is not valid; expected 1-64 letters, digits, "
                "'_', '.' or '-'",
                hint="e.g. drift-2-nodes",
            )
        checks = (("k", self.k, 1, 1e6), ("window_s", self.window_s, 1, 1e8),
                  ("floor", self.floor, 0, 1), ("silent_s", self.silent_s, 1, 1e8))  # fmt: skip
        for key, value, low, high in checks:
            ok = isinstance(value, int | float) and math.isfinite(value) and low <= value <= high
            if not ok or (key == "k" and not isinstance(value, int)):
                raise ConfigError(
                    f"alert rule {self.name!r}: {key} {value!r} is not valid; expected a "
                    f"{'whole number' if key == 'k' else 'number'} from {low:g} to {high:g}",
                    hint="see docs/fleet-monitoring.md#rules",
                )

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Rule:
        """Raises ConfigError naming an unknown key or kind."""
        known = {"name", "kind", "k", "window_s", "floor", "silent_s"}
        extra = sorted(set(doc) - known)
        if extra:
            raise ConfigError(
                f"alert rule keys {extra} are not known; expected some of {sorted(known)}"
            )
        try:
            kind = RuleKind(str(doc.get("kind")))
        except ValueError:
            raise ConfigError(
                f"alert rule kind {doc.get('kind')!r} is not known; expected one of "
                f"{[k.value for k in RuleKind]}"
            ) from None
        rest = {k: v for k, v in doc.items() if k not in ("name", "kind")}
        return cls(str(doc.get("name", kind.value)), kind, **rest)


DEFAULT_RULES = (
    Rule("drifting-nodes", RuleKind.DRIFTING_NODES, k=1, window_s=600.0),
    Rule("node-silent", RuleKind.NODE_SILENT, silent_s=300.0),
)


@dataclass(frozen=True, slots=True)
class NodeSeen:
    """A node of the fleet list: when it enrolled and when it was last heard from."""

    node_id: str
    enrolled_at: float
    last_seen: float | None


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule's condition holding now for one subject, with the figures that drove it."""

    rule: str
    kind: RuleKind
    subject: str
    figures: Mapping[str, Any]


def _drifting(rule: Rule, rows: list[FleetRow], now: float) -> list[Finding]:
    by_version: dict[tuple[str, str], list[FleetRow]] = {}
    for row in rows:
        if now - row.received_at <= rule.window_s:
            by_version.setdefault((row.model, row.version), []).append(row)
    out = []
    for (model, version), seen in sorted(by_version.items()):
        drifting = sorted(r.node_id for r in seen if r.drifting)
        if len(drifting) >= rule.k:
            figures = {"drifting": len(drifting), "nodes": len(seen), "k": rule.k,
                       "window_s": rule.window_s, "drifting_nodes": drifting[:20]}  # fmt: skip
            out.append(Finding(rule.name, rule.kind, f"{model}:{version}", figures))
    return out


def _accuracy(rule: Rule, rows: list[FleetRow], now: float) -> list[Finding]:
    out = []
    for row in rows:
        value = row.estimated_accuracy
        if value is not None and value < rule.floor and now - row.received_at <= rule.window_s:
            subject = f"{row.model}:{row.version}@{row.node_id}"
            figures = {"estimated_accuracy": value, "floor": rule.floor}
            out.append(Finding(rule.name, rule.kind, subject, figures))
    return out


def _silent(
    rule: Rule, nodes: Iterable[NodeSeen], rows: list[FleetRow], now: float
) -> list[Finding]:
    heard: dict[str, float] = {}
    for row in rows:
        heard[row.node_id] = max(heard.get(row.node_id, 0.0), row.received_at)
    out = []
    for node in nodes:
        last = max(node.last_seen or 0.0, heard.get(node.node_id, 0.0))
        since = last if last > 0 else node.enrolled_at
        if now - since > rule.silent_s:
            figures = {"silent_s": round(now - since, 3), "limit_s": rule.silent_s,
                       "last_seen": iso(last) if last > 0 else None}  # fmt: skip
            out.append(Finding(rule.name, rule.kind, node.node_id, figures))
    return out


def evaluate(
    rules: Iterable[Rule], rows: list[FleetRow], nodes: list[NodeSeen], now: float
) -> list[Finding]:
    """Every rule's findings now over the monitoring rows and the fleet's nodes."""
    out: list[Finding] = []
    for rule in rules:
        if rule.kind is RuleKind.DRIFTING_NODES:
            out.extend(_drifting(rule, rows, now))
        elif rule.kind is RuleKind.ACCURACY_FLOOR:
            out.extend(_accuracy(rule, rows, now))
        else:
            out.extend(_silent(rule, nodes, rows, now))
    return out


@dataclass(frozen=True, slots=True)
class Alert:
    """One stored episode of a rule holding for a subject."""

    alert_id: str
    rule: str
    kind: RuleKind
    subject: str
    state: AlertState
    first_seen: float
    last_seen: float
    resolved_at: float | None
    figures: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.alert_id, "rule": self.rule, "kind": self.kind.value,
            "subject": self.subject, "state": self.state.value,
            "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
            "resolved_at": iso(self.resolved_at), "figures": dict(self.figures),
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Changes:
    """What one evaluation changes: new alerts, firing ones seen again, resolved ones."""

    opened: tuple[Alert, ...] = ()
    kept: tuple[Alert, ...] = ()
    resolved: tuple[Alert, ...] = ()

    @property
    def notices(self) -> tuple[Alert, ...]:
        """The changes a webhook is told of (a kept alert is not news)."""
        return self.opened + self.resolved


def reconcile(
    firing: Iterable[Alert], findings: Iterable[Finding], now: float, new_id: Callable[[], str]
) -> Changes:
    """Open an alert per finding without one firing, refresh the ones seen again, resolve the
    ones whose condition cleared (or whose rule is gone) and any second one firing for the same
    rule and subject. Pure."""
    open_by_key: dict[tuple[str, str], Alert] = {}
    twins = []  # a second alert firing for one key (two replicas opened it at once)
    for a in firing:
        key = (a.rule, a.subject)
        if key in open_by_key:
            twins.append(replace(a, state=AlertState.RESOLVED, resolved_at=now))
        else:
            open_by_key[key] = a
    opened, kept = [], []
    seen = set()
    for f in findings:
        key = (f.rule, f.subject)
        if key in seen:
            continue
        seen.add(key)
        known = open_by_key.get(key)
        if known is None:
            opened.append(Alert(new_id(), f.rule, f.kind, f.subject, AlertState.FIRING, now, now,
                                None, dict(f.figures)))  # fmt: skip
        else:
            kept.append(replace(known, last_seen=now, figures=dict(f.figures)))
    resolved = twins + [replace(a, state=AlertState.RESOLVED, resolved_at=now)
                        for key, a in open_by_key.items() if key not in seen]  # fmt: skip
    return Changes(tuple(opened), tuple(kept), tuple(resolved))
