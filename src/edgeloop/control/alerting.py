"""Alerting at run time: the rules, one evaluation per control tick, notices to the webhook.

Rules come from a JSON file (``edgeloop control --alert-rules FILE``;
docs/fleet-monitoring.md#rules) or are :data:`~edgeloop.control.alerts.DEFAULT_RULES`.
"""

from __future__ import annotations

import json
import time
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
    """The rules, the optional webhook and the last evaluation's counts."""

    rules: tuple[Rule, ...] = DEFAULT_RULES
    webhook: WebhookConfig | None = None
    sender: Webhook | None = field(default=None, repr=False)
    evaluations: int = 0

    def start(self) -> Webhook | None:
        """The sender (made on the running loop, whose queue it uses), or None."""
        if self.webhook is not None and self.sender is None:
            self.sender = Webhook(self.webhook)
        return self.sender

    async def tick(self, plane: ControlPlane) -> Changes:
        """Evaluate and store (in a thread), then queue the notices (never blocks)."""
        changes: Changes = await run_in_threadpool(
            plane.write,
            "evaluating alert rules",
            lambda c: alert_store.evaluate_and_store(c, self.rules, time.time()),
        )
        self.evaluations += 1
        if self.sender is not None:
            for alert in changes.notices:
                self.sender.offer(notice(alert))
        return changes
