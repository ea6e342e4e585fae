"""Cost per telemetry item of fleet monitoring's ingest hook (docs/fleet-monitoring.md).

Stores batches of 100 items through ``telemetry.prepare`` + ``telemetry.store_rows`` in one
SQLite transaction each (as the control plane's group commit does), with the hook (``fold`` +
``apply``) and with it switched off (``fold`` returning nothing: the code before the hook), for
metrics items (each with one watched model), sample items, and "mixed" batches (one metrics
item, one drift event, 98 samples: an agent's usual batch); then the hook alone (minimum of 30
runs: the end-to-end medians move with the machine's load). Prints one JSON object.

    .venv/bin/python bench/fleet_monitoring_ingest.py [--batches 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeloop.control import monitoring, tables, telemetry
from edgeloop.registry.database import connect

BATCH = 100


def _metrics(i: int) -> dict[str, Any]:
    watched = {"version": "2", "state": "active", "samples_seen": i, "alarms": {"input": 1},
               "quality": {"samples": i, "wrong_shape": 0, "nonfinite_samples": 0,
                           "out_of_range": 3},
               "performance": {"labelled": 0, "window": 200, "accuracy": None,
                               "macro_f1": None, "estimated_accuracy": 0.91},
               "state_bytes": 9000, "drift_ratio": {"input": 0.4}, "drifting": False}  # fmt: skip
    app = {"window_s": 60.0, "requests": 100, "errors": 0, "p50_ms": 1.0, "p99_ms": 3.0}
    return {**app, "model": "digits", "model_version": "2", "monitoring": {"digits": watched}}


def _items(kind: str, n: int, start: int) -> list[dict[str, Any]]:
    """``n`` items: all metrics, all samples, or "mixed" (an agent's usual batch: one metrics
    item, one drift event, samples)."""
    now = datetime.now(UTC).isoformat()
    sample = {"inputs": [[0.1] * 64]}
    event = {"type": "drift", "model": "digits", "model_version": "2", "kind": "input",
             "score": 2.0, "threshold": 1.0, "sample_index": 5, "top_features": []}  # fmt: skip
    out = []
    for i in range(n):
        kinds = {"metrics": ("metrics", _metrics(start + i)), "sample": ("sample", sample)}
        if kind == "mixed":
            kinds["mixed"] = (
                (("metrics", _metrics(start)), ("event", event))[i] if i < 2 else ("sample", sample)
            )
        k, payload = kinds[kind]
        out.append({"id": str(uuid.uuid4()), "kind": k, "created_at": now,
                    "content_type": "application/json", "payload": payload})  # fmt: skip
    return out


def _run(db_url: str, kind: str, batches: int, hook: bool) -> float:
    """Median microseconds per item over ``batches`` batches (one node per batch)."""
    db = connect(db_url)
    tables.metadata_obj.create_all(db.engine)
    fold = monitoring.fold
    if not hook:
        monitoring.fold = lambda node_id, rows: []  # type: ignore[assignment]
    per_item = []
    try:
        for b in range(batches):
            items = _items(kind, BATCH, b * BATCH)
            started = time.perf_counter()
            rows, rejected = telemetry.prepare(f"node-{b % 10}", items, time.time())
            with db.write() as conn:
                telemetry.store_rows(conn, f"node-{b % 10}", rows, rejected)
            per_item.append((time.perf_counter() - started) / BATCH * 1e6)
    finally:
        monitoring.fold = fold  # type: ignore[assignment]
        db.engine.dispose()
    return statistics.median(per_item)


def _hook_alone(db_url: str, repeats: int = 30) -> dict[str, float]:
    """The hook's own cost, the minimum over ``repeats`` (robust on a busy machine): fold per
    item of metrics and of sample rows, and one ``apply`` of a mixed batch's two updates."""
    rows = {k: telemetry.prepare("n", _items(k, BATCH, 0), time.time())[0]
            for k in ("metrics", "sample", "mixed")}  # fmt: skip
    out = {}
    for kind in ("metrics", "sample"):
        best = min(_timed(lambda k=kind: monitoring.fold("n", rows[k])) for _ in range(repeats))
        out[f"fold_{kind}_us_per_item"] = round(best / BATCH * 1e6, 2)
    db = connect(db_url)
    tables.metadata_obj.create_all(db.engine)
    updates = monitoring.fold("n", rows["mixed"])
    with db.write() as conn:
        best = min(_timed(lambda: monitoring.apply(conn, updates, time.time()))
                   for _ in range(repeats))  # fmt: skip
    db.engine.dispose()
    out["apply_mixed_batch_us"] = round(best * 1e6, 1)
    return out


def _timed(run: Any) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    out: dict[str, Any] = {"batch": BATCH, "batches": args.batches, "us_per_item": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("metrics", "mixed", "sample"):
            for hook in (False, True, False, True):  # interleaved: drift of the machine shows
                url = f"sqlite:///{Path(tmp) / f'{kind}-{hook}-{uuid.uuid4().hex[:6]}.db'}"
                key = f"{kind}_{'with' if hook else 'without'}_hook"
                out["us_per_item"].setdefault(key, []).append(
                    round(_run(url, kind, args.batches, hook), 1)
                )
        out["hook_alone"] = _hook_alone(f"sqlite:///{Path(tmp) / 'alone.db'}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
