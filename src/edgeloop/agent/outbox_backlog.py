"""What waits in the telemetry outbox, as the agent's report carries it (``outbox``:
docs/fleet-protocol.md). :meth:`edgeloop.agent.outbox.Outbox.backlog` reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class KindBacklog:
    rows: int
    bytes: int
    oldest_created_at: float | None  # the node's clock, Unix seconds


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in the outbox now, per kind (kinds with no row are left out)."""

    kinds: dict[str, KindBacklog]

    def to_report(self, now: float) -> dict[str, Any]:
        """``{"rows", "bytes", "oldest_age_s", "kinds": {kind: {"rows", "bytes",
        "oldest_age_s"}}}``, ages in seconds at ``now`` (None: nothing waits)."""

        def age(t: float | None) -> float | None:
            return None if t is None else round(max(0.0, now - t), 3)

        kinds = {
            k: {"rows": v.rows, "bytes": v.bytes, "oldest_age_s": age(v.oldest_created_at)}
            for k, v in sorted(self.kinds.items())
        }
        times = [v.oldest_created_at for v in self.kinds.values() if v.oldest_created_at]
        return {
            "rows": sum(v.rows for v in self.kinds.values()),
            "bytes": sum(v.bytes for v in self.kinds.values()),
            "oldest_age_s": age(min(times)) if times else None,
            "kinds": kinds,
        }
