"""Each served version's top-1 confidence over the rows it answered: count, sum, sum of squares.

What a fleet A/B experiment's ``confidence`` metric reads (agent/arm_counts.py). Every answered
row of the first output counts once, under (model, version, role) like
``edgeloop_requests_total``: primary answers and shadow copies (role ``shadow``) apart. A row is
read as serving/predict.py reads an answer: a distribution as it is, logits through a softmax;
its top-1 probability is its confidence. A model whose output has one value per row (a score, a
regression) has no confidence and counts nothing; neither does a row holding NaN or Inf.

Only while the model serves more than one version (:func:`tallied`: an A/B split of two or more
arms, or a shadow): the only time per-arm confidence is read. The agent sets the model's routing
before it places the experiment's versions and reads its baseline after both
(agent/experiment.py ``_start``), so the counts since the baseline are complete; a model served
alone pays one attribute check a request instead of the tally.

Sums, not a running mean: they add across nodes and subtract from a baseline exactly (up to
rounding), and the control plane turns them into Welford's (count, mean, M2) once
(control/experiment_arms.py). The values lie in [0, 1], so ``M2 = Q - S^2 / n`` cancels at most
the ~log10(n) leading digits of 16.

Cost per answered request of a tallied model (bench/confidence_cost.py, shared 2-core AMD
EPYC, 3 runs): one row
of up to ``_SHORT_ROW`` scores is read in plain Python (capture.row_scores), 1.6-2.4 us for 3
classes and 2.3-3.2 us for 10, about what counting the request and its latency already costs
(``ServerMetrics.observe``, 2.3 us); a longer row or a batch takes a few vectorised passes
(1 x 1,000 classes: 19-30 us; 32 x 10: 21-22 us); one value a row: 0.16 us, nothing counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeloop.monitoring.outputs import distributions
from edgeloop.serving.capture import row_scores
from edgeloop.serving.routing import Routing

Array = np.ndarray[Any, Any]
Sums = tuple[int, float, float]  # rows, sum of top-1, sum of squared top-1
ZERO: Sums = (0, 0.0, 0.0)
# Plain Python is cheaper than numpy's fixed ~14 us up to ~200 scores (measured: 100 scores
# 7.4 us vs 14.1 us, 300 scores 19.1 us vs 14.7 us).
_SHORT_ROW = 200


def tallied(routing: Routing) -> bool:
    """Whether a model's answers are counted: only while its routing names more than one
    version, an A/B split of two or more arms or a shadow (see the module docstring)."""
    split = routing.split
    return routing.shadow is not None or (split is not None and len(split.arms) > 1)


def top1(first: Array) -> Array:
    """Each row's top-1 probability (NaN for a row with NaN/Inf); rows of ``first``, batch-first,
    with at least two scores a row."""
    x, ok = distributions(first.reshape(first.shape[0], -1))
    with np.errstate(invalid="ignore", over="ignore"):
        best = x.max(axis=1)
        soft = 1.0 / np.exp(x - best[:, None]).sum(axis=1)  # a softmax's largest value
    return np.asarray(np.where(ok, best, soft))


class ConfidenceTally:
    """Per (model, version, role): rows answered with class scores, and their top-1 sums."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str, str], Sums] = {}

    def observe(self, model: str, version: str, role: str, first: Array | None) -> None:
        """Count the rows of one answer's first output (batch-first). Never raises for odd
        shapes: an output without class scores counts nothing."""
        if first is None or first.ndim < 1 or first.shape[0] == 0:
            return
        rows = int(first.shape[0])
        if first.size < 2 * rows:  # one value a row: no class, no confidence
            return
        if rows == 1 and first.size <= _SHORT_ROW:
            top = row_scores(first.reshape(-1).tolist()).confidence
            if top is None:
                return
            n, s, q = 1, top, top * top
        else:
            values = top1(first)
            values = values[np.isfinite(values)]
            n, s, q = int(values.size), float(values.sum()), float(values @ values)
            if n == 0:
                return
        key = (model, version, role)
        count, total, squares = self._sums.get(key, ZERO)
        # One assignment: a reader on another thread never sees half an update.
        self._sums[key] = (count + n, total + s, squares + q)

    def read(self, model: str, version: str, role: str) -> Sums:
        """The sums so far (zeros: nothing counted)."""
        return self._sums.get((model, version, role), ZERO)
