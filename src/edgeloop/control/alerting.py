"""Alerting at run time: the rules, one evaluation per control tick, notices to the webhook.

Rules come from a JSON file (``edgeloop control --alert-rules FILE``;
docs/fleet-monitoring.md#rules) or are :data:`~edgeloop.control.alerts.DEFAULT_RULES`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from edgeloop.control import alert_store
from edgeloop.control.alerts import DEFAULT_RULES, Alert, Changes, Rule
from edgeloop.control.plane import ControlPlane
from edgeloop.control.webhook import Webhook, WebhookConfig
from edgeloop.core.errors import ConfigError


def load_rules(path: Path) -> tuple[Rule, ...]:
    """The rules of a JSON file ``{"rules": [{"name", "kind", ...}]}``. Raises ConfigError."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"--alert-rules {path}: cannot read it as JSON: {exc}",
            hint='expected {"rules": [{"name": "...", "kind": "drifting_nodes", "k": 2}]}',
        ) from exc
    items = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"--alert-rules {path}: expected an object with a list 'rules'")
    rules = tuple(Rule.from_dict(i) for i in items)
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"--alert-rules {path}: rule names repeat: {names}")
    return rules


def notice(alert: Alert) -> dict[str, Any]:
    """The webhook's JSON body for one alert that opened or resolved."""
    return {"source": "edgeloop", "alert": alert.to_dict()}


@dataclass
class Alerting:
    """The rules, the optional webhook, how often to evaluate, and this process's counts.

    ``every_s``: the least time between two evaluations (the control tick calls :meth:`tick`
    each second; an evaluation over 10,000 nodes costs a few hundred ms of a core, see
    docs/fleet-monitoring.md)."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    webhook: WebhookConfig | None = None
    every_s: float = 15.0
    # Called (in a thread) with the alerts each evaluation opened: retraining policies.
    on_opened: Callable[[tuple[Alert, ...]], None] | None = None
    sender: Webhook | None = field(default=None, repr=False)
    evaluations: int = 0
    _last: float = field(default=-math.inf, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.every_s) and self.every_s >= 0):
            raise ConfigError(
                f"--alert-every-s {self.every_s!r} is not valid; expected seconds >= 0",
                hint="e.g. --alert-every-s 15",
            )

    def start(self) -> Webhook | None:
        """The sender (made on the running loop, whose queue it uses), or None."""
        if self.webhook is not None and self.sender is None:
            self.sender = Webhook(self.webhook)
        return self.sender

    async def tick(self, plane: ControlPlane) -> Changes | None:
        """Evaluate if ``every_s`` passed (reads and rules in a thread, then the changes in one
        short write), then queue the notices (never blocks); None when it was not time."""
        if time.monotonic() - self._last < self.every_s:
            return None
        self._last = time.monotonic()

        def evaluate() -> Changes:  # in a thread: the read and the rules are CPU-heavy
            gathered = plane.read("reading fleet monitoring", alert_store.gather)
            return alert_store.decide(gathered, self.rules, time.time())

        changes = await run_in_threadpool(evaluate)
        if changes.opened or changes.kept or changes.resolved:
            await run_in_threadpool(
                plane.write, "storing alerts", lambda c: alert_store.write(c, changes)
            )
        self.evaluations += 1
        if self.on_opened is not None and changes.opened:
            await run_in_threadpool(self.on_opened, changes.opened)
        if self.sender is not None:
            for alert in changes.notices:
                self.sender.offer(notice(alert))
        return changes
