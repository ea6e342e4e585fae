"""Power-of-Choice (Cho, Wang, Joshi 2022, "Towards Understanding Biased Client Selection").

1. Sample a candidate set A of d >= k online clients without replacement, with probability
   proportional to their data fraction p_k (the paper's sampling).
2. The clients in A evaluate the current global model on their data (local loss F_k(w)).
3. Pick the k clients of A with the highest local loss.

Step 2 is remote: :func:`candidate_set` and :func:`highest_loss` are the two pure halves. The
registered selector runs both with the losses the nodes last reported (``Candidate.local_loss``,
the paper's cheaper variant that reuses stale losses); a node without a loss counts as +inf so
it is asked at least once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeloop.core.errors import ConfigError
from edgeloop.federated.selection.base import (
    SELECTORS,
    Candidate,
    Decision,
    Selection,
    Why,
    check_request,
    seed_for,
)


def candidate_set(candidates: Sequence[Candidate], d: int, seed: int) -> tuple[str, ...]:
    """d online node ids sampled without replacement, P proportional to num_samples (+1)."""
    online = [c for c in candidates if c.online]
    weights = np.array([c.num_samples + 1.0 for c in online])  # +1: a node of 0 samples still may
    rng = np.random.default_rng(seed)
    size = min(d, len(online))
    picked = rng.choice(len(online), size=size, replace=False, p=weights / weights.sum())
    return tuple(online[int(i)].node_id for i in picked)


def highest_loss(losses: Mapping[str, float], k: int) -> tuple[str, ...]:
    """The k ids with the highest loss (ties by id, for a stable order)."""
    return tuple(sorted(losses, key=lambda n: (-losses[n], n))[:k])


@dataclass(frozen=True, slots=True)
class PowerOfChoiceSelector:
    d: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ConfigError(f"Power-of-Choice needs d >= 1, got {self.d}", hint="use d >= k")

    @property
    def name(self) -> str:
        return "power-of-choice"

    def select(self, candidates: Sequence[Candidate], k: int, round: int) -> Selection:
        check_request(candidates, k)
        if self.d < k:
            raise ConfigError(f"Power-of-Choice needs d >= k, got d={self.d}, k={k}")
        pool = candidate_set(candidates, self.d, seed_for(self.seed, round))
        by_id = {c.node_id: c for c in candidates}
        losses = {n: by_id[n].local_loss for n in pool}
        known = {n: (math.inf if v is None else v) for n, v in losses.items()}
        chosen = highest_loss(known, k)
        decisions = []
        for c in candidates:
            if not c.online:
                decisions.append(Decision(c.node_id, False, Why.OFFLINE))
            elif c.node_id not in pool:
                decisions.append(Decision(c.node_id, False, Why.NOT_IN_CANDIDATE_SET))
            else:
                picked = c.node_id in chosen
                why = Why.HIGHER_LOSS if picked else Why.LOWER_LOSS
                decisions.append(Decision(c.node_id, picked, why, f"loss {c.local_loss}"))
        return Selection(chosen, tuple(decisions))


SELECTORS.register("power-of-choice")(PowerOfChoiceSelector)
