"""What drift monitoring adds to a served request: the same model with and without a profile.

    .venv/bin/python -m tests.serving.monitor_cost [--requests 2000] [--features 64]

A linear softmax classifier on ``--features`` inputs, served in-process (the test harness:
httpx's ASGI transport, no socket), is sent the same ``/predict`` stream twice per round, once
as ``plain`` (no profile) and once as ``watched`` (a profile fitted on 2,000 reference rows
with outputs and labels beside it), rounds alternating so drift in the machine's load hits
both. Prints one JSON object: per arm the per-request latency p50/p90/p99 and mean (ms, client
side, whole request), and the watched arm's mean monitor update time per row (ms, measured
inside the server around each update; off the request path but on the same core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tests.serving.harness import Harness, serving
from tests.tiny_models import make_linear_onnx

from edgeloop.monitoring import DriftMonitor


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = make_linear_onnx(folder / "plain.onnx", features=args.features, classes=10)
        watched = folder / "watched.onnx"
        watched.write_bytes(plain.read_bytes())
        ref = rng.standard_normal((2000, args.features)).astype(np.float32)
        session = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
        probs = np.asarray(session.run(None, {"input": ref})[0])
        monitor = DriftMonitor.fit(ref, probs, probs.argmax(axis=1))
        (folder / "watched.profile.npz").write_bytes(monitor.profile.to_bytes())
        stream = rng.standard_normal((args.requests // args.rounds, args.features))
        times: dict[str, list[float]] = {"plain": [], "watched": []}
        with serving([plain, watched]) as h:
            for arm in ("plain", "watched"):
                _run_model(h, arm, stream[:100])  # warm-up of both paths
            for _ in range(args.rounds):
                for arm in ("plain", "watched"):
                    times[arm] += _run_model(h, arm, stream)
            view = h.get("/v2/models/watched/monitor").json()
    doc = {
        arm: {
            "requests": len(t),
            "p50_ms": _quantile(t, 0.5),
            "p90_ms": _quantile(t, 0.9),
            "p99_ms": _quantile(t, 0.99),
            "mean_ms": statistics.fmean(t),
        }
        for arm, t in times.items()
    }
    doc["added_p50_ms"] = doc["watched"]["p50_ms"] - doc["plain"]["p50_ms"]
    doc["added_mean_ms"] = doc["watched"]["mean_ms"] - doc["plain"]["mean_ms"]
    doc["monitor_update_ms_mean"] = view["update_ms_mean"]
    doc["monitor_samples"] = view["samples_seen"]
    doc["state_bytes"] = view["state_bytes"]
    doc["features"] = args.features
    print(json.dumps(doc, indent=1))


def _run_model(h: Harness, model: str, x: np.ndarray) -> list[float]:
    out = []
    for row in x:
        started = time.perf_counter()
        r = h.post(f"/predict/{model}", json={"features": row.tolist()})
        out.append((time.perf_counter() - started) * 1000.0)
        if r.status_code != 200:
            raise SystemExit(r.text)
    return out


if __name__ == "__main__":
    main()
