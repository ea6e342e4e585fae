"""Fairness: the online nodes that trained least recently go first (never-selected before all).

Ties break by node id, so the order is deterministic; over rounds every online node is asked in
turn, which bounds how stale any node's contribution gets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgeloop.federated.selection.base import (
    SELECTORS,
    Candidate,
    Decision,
    Selection,
    Why,
    check_request,
)


@dataclass(frozen=True, slots=True)
class FairnessSelector:
    @property
    def name(self) -> str:
        return "fairness"

    def select(self, candidates: Sequence[Candidate], k: int, round: int) -> Selection:
        check_request(candidates, k)

        def last(c: Candidate) -> float:
            return -math.inf if c.last_selected is None else float(c.last_selected)

        ranked = sorted((c for c in candidates if c.online), key=lambda c: (last(c), c.node_id))
        chosen = tuple(c.node_id for c in ranked[:k])
        decisions = []
        for c in candidates:
            seen = "never" if c.last_selected is None else f"round {c.last_selected}"
            if not c.online:
                decisions.append(Decision(c.node_id, False, Why.OFFLINE))
            elif c.node_id in chosen:
                decisions.append(Decision(c.node_id, True, Why.LEAST_RECENTLY_SELECTED, seen))
            else:
                decisions.append(Decision(c.node_id, False, Why.SELECTED_MORE_RECENTLY, seen))
        return Selection(chosen, tuple(decisions))


SELECTORS.register("fairness")(FairnessSelector)
