"""What counting an answer's top-1 confidence costs the server per request.

serving/confidence_tally.py runs on every answered request of every served version (a fleet
experiment's ``confidence`` metric). This times ``ConfidenceTally.observe`` on typical first
outputs, beside ``ServerMetrics.observe`` (counting the request and its latency), which every
request already pays. Best of 5 repeats of 20,000 calls, after 1,000 warm-up calls.

    .venv/bin/python bench/confidence_cost.py
"""

from __future__ import annotations

import timeit

import numpy as np

from edgeloop.serving.confidence_tally import ConfidenceTally
from edgeloop.serving.metrics import ServerMetrics, Timing

CALLS = 20_000


def best_us(call: object) -> float:
    for _ in range(1_000):
        call()  # type: ignore[operator]
    return min(timeit.repeat(call, number=CALLS, repeat=5)) / CALLS * 1e6  # type: ignore[arg-type]


def main() -> None:
    rng = np.random.default_rng(0)
    cases = {
        "1 row x 3 classes (probabilities)": rng.dirichlet([1.0] * 3)[None].astype(np.float32),
        "1 row x 10 (logits)": rng.standard_normal((1, 10)).astype(np.float32),
        "1 row x 1000 (logits)": rng.standard_normal((1, 1000)).astype(np.float32),
        "32 rows x 10 (logits)": rng.standard_normal((32, 10)).astype(np.float32),
        "1 row x 1 (a score: nothing counted)": rng.standard_normal((1, 1)).astype(np.float32),
    }
    tally = ConfidenceTally()
    for name, y in cases.items():
        us = best_us(lambda y=y: tally.observe("m", "1", "primary", y))
        print(f"| ConfidenceTally.observe, {name} | {us:.2f} us |")
    metrics, timing = ServerMetrics(), Timing(0.0001, 0.0001, 0.0002)
    us = best_us(lambda: metrics.observe(("m", "1", "", "primary"), "predict", 200, timing))
    print(f"| ServerMetrics.observe (every request pays it already) | {us:.2f} us |")


if __name__ == "__main__":
    main()
