"""What counting an answer's top-1 confidence costs the server per request.

serving/confidence_tally.py counts a fleet experiment's ``confidence`` metric on the answered
requests of a model that serves more than one version (a split or a shadow). This times
``ConfidenceTally.observe`` on typical first outputs, then the service's own ``_tally`` (the gate
and the tally) for a model served alone (the gate closed: what every server without an
experiment pays) and for one with an A/B split, beside ``ServerMetrics.observe`` (counting the
request and its latency), which every request already pays. Best of 5 repeats of 20,000 calls,
after 1,000 warm-up calls.

    .venv/bin/python bench/confidence_cost.py
"""

from __future__ import annotations

import os
import timeit
from types import SimpleNamespace

import numpy as np

from edgeloop.serving.confidence_tally import ConfidenceTally
from edgeloop.serving.metrics import ServerMetrics, Timing
from edgeloop.serving.routing import Routing, Split
from edgeloop.serving.service import InferenceService

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
    # The service's method itself, on a stand-in for the served model (its name and routing are
    # all _tally reads); the service is built bare, with only the metrics it writes to.
    service = object.__new__(InferenceService)
    service.metrics = ServerMetrics()
    outputs = {"output": cases["1 row x 10 (logits)"]}
    for label, routing in (("one version served (gate closed)", Routing()),
                           ("A/B split (gate open)", Routing(Split((("1", 1.0), ("2", 1.0))))),
                           ):  # fmt: skip
        model = SimpleNamespace(name="m", routing=routing)
        us = best_us(lambda m=model: service._tally(m, "1", "primary", outputs))  # type: ignore[arg-type]
        print(f"| InferenceService._tally, 1 row x 10, {label} | {us:.2f} us |")
    metrics, timing = ServerMetrics(), Timing(0.0001, 0.0001, 0.0002)
    us = best_us(lambda: metrics.observe(("m", "1", "", "primary"), "predict", 200, timing))
    print(f"| ServerMetrics.observe (every request pays it already) | {us:.2f} us |")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
