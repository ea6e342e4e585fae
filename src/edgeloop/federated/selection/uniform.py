"""Uniform random selection without replacement (McMahan et al. 2017), seeded per round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.federated.selection.base import (
    SELECTORS,
    Candidate,
    Decision,
    Selection,
    Why,
    check_request,
    seed_for,
)


@dataclass(frozen=True, slots=True)
class UniformSelector:
    """k of the online candidates, each subset equally likely; offline nodes are never asked."""

    seed: int = 0

    @property
    def name(self) -> str:
        return "uniform"

    def select(self, candidates: Sequence[Candidate], k: int, round: int) -> Selection:
        check_request(candidates, k)
        online = [c.node_id for c in candidates if c.online]
        rng = np.random.default_rng(seed_for(self.seed, round))
        picked = rng.choice(len(online), size=min(k, len(online)), replace=False)
        chosen = tuple(online[int(i)] for i in picked)
        decisions = []
        for c in candidates:
            if not c.online:
                decisions.append(Decision(c.node_id, False, Why.OFFLINE))
            elif c.node_id in chosen:
                decisions.append(Decision(c.node_id, True, Why.SAMPLED, f"seed {self.seed}"))
            else:
                decisions.append(Decision(c.node_id, False, Why.NOT_SAMPLED))
        return Selection(chosen, tuple(decisions))


SELECTORS.register("uniform")(UniformSelector)
