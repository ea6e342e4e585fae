"""Cost of one alert-rule evaluation over a large fleet (docs/fleet-monitoring.md#rules).

Fills a SQLite database with ``--nodes`` nodes, each with one watched version, then times
``alert_store.gather`` (the read) and ``alert_store.decide`` (the rules) three times. Prints
one JSON object.

    .venv/bin/python bench/fleet_alert_eval.py [--nodes 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from edgeloop.control import alert_store, tables
from edgeloop.control.alerts import DEFAULT_RULES, Rule, RuleKind
from edgeloop.registry.database import connect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10_000)
    n = parser.parse_args().nodes
    snapshot = json.dumps({"state": "active", "drifting": False, "drift_ratio": {"input": 0.3},
                           "estimated_accuracy": 0.9, "requests": 100, "errors": 0})  # fmt: skip
    rules = (*DEFAULT_RULES, Rule("acc", RuleKind.ACCURACY_FLOOR, floor=0.8))
    out: dict[str, object] = {"nodes": n, "read_ms": [], "evaluate_ms": []}
    with tempfile.TemporaryDirectory() as tmp:
        db = connect(f"sqlite:///{Path(tmp) / 'fleet.db'}")
        tables.metadata_obj.create_all(db.engine)
        now = time.time()
        nodes = [{"node_id": f"n{i}", "name": f"n{i}", "token_hash": uuid.uuid4().hex,
                  "labels": "{}", "capabilities": "{}", "device_class": "x", "enrolled_at": now,
                  "last_seen": now, "desired_revision": 0} for i in range(n)]  # fmt: skip
        rows = [{"node_id": f"n{i}", "model": "digits", "model_version": "2", "metrics_at": now,
                 "snapshot": snapshot, "received_at": now} for i in range(n)]  # fmt: skip
        with db.write() as conn:
            conn.execute(tables.nodes.insert(), nodes)
            conn.execute(tables.monitoring.insert(), rows)
        for _ in range(3):
            started = time.perf_counter()
            with db.engine.connect() as conn:
                gathered = alert_store.gather(conn)
            read = time.perf_counter()
            alert_store.decide(gathered, rules, time.time())
            done = time.perf_counter()
            out["read_ms"].append(round((read - started) * 1000, 1))  # type: ignore[attr-defined]
            out["evaluate_ms"].append(round((done - read) * 1000, 1))  # type: ignore[attr-defined]
        db.engine.dispose()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
