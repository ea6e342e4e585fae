"""Schemathesis against both servers' OpenAPI documents, long: >= 10,000 requests per server.

The same fuzzer as ``tests/fuzz`` (tests/fuzz/fuzzer.py: positive and negative cases from each
operation's schema, a share with real path parameters and bodies that reach inference; checks:
no 5xx, documented status codes, documented media types, answers that fit their schema), on
real processes: ``edgeloop serve`` of a tiny linear model behind an admin token, and
``edgeloop control`` on a fresh SQLite home. Rounds of ``ceil(requests / operations)`` cases
per operation, each round with the next Hypothesis seed, until the server was sent
``--requests`` requests. Reported per server: requests sent, answers by status class and
status, 5xx (goal 0), check failures, wall time and the server process's CPU seconds.

    .venv/bin/python bench/fuzz_bench.py --json bench/fuzz_bench_results.json
    .venv/bin/python bench/fuzz_bench.py --requests 500 --servers serve    # a quick look

Needs the dev extra (schemathesis).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package

from tests.fuzz.fuzzer import Tally, fuzz, operation_count
from tests.fuzz.servers import Target, control_target, serve_target

ROUND = 2_000  # requests per round: each round a new seed, and the figures written
SERVERS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Target]]] = {
    "serve": serve_target,
    "control": control_target,
}


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a live process (Linux /proc), None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def merge(total: Tally, part: Tally) -> None:
    total.sent += part.sent
    total.by_class.update(part.by_class)
    total.by_status.update(part.by_status)
    total.server_errors += part.server_errors
    total.failure_count += part.failure_count
    total.failures += part.failures[: max(0, 20 - len(total.failures))]
    total.operations = part.operations
    total.seconds += part.seconds


def run(
    name: str, requests: int, first_seed: int, report: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Fuzz server ``name`` in rounds of at most ``ROUND`` requests; ``report`` gets the figures
    so far after each round (a long run interrupted still leaves its figures)."""
    with tempfile.TemporaryDirectory() as folder, SERVERS[name](Path(folder)) as target:
        cpu_before = cpu_seconds(target.pid)
        total, seed, operations = Tally(name), first_seed, operation_count(target)
        while total.sent < requests:
            per_op = math.ceil(min(ROUND, requests - total.sent) / operations)
            part = fuzz(target, max(per_op, 5), seed)
            merge(total, part)
            seed += 1
            cpu = cpu_seconds(target.pid)
            doc = total.to_dict()
            doc.update(
                complete=total.sent >= requests,
                seeds=[first_seed, seed - 1],
                server_cpu_s=None if cpu_before is None or cpu is None else cpu - cpu_before,
                alive_after=target.alive(),
                failures=total.failures,
            )
            report(doc)
            print(f"{name}: seed {seed - 1}: {part.sent} requests ({total.sent} in all), "
                  f"{part.seconds:.0f} s", file=sys.stderr)  # fmt: skip
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per server, at least")
    parser.add_argument("--servers", default="serve,control")
    parser.add_argument("--seed", type=int, default=0, help="the first Hypothesis seed")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_at_start": os.getloadavg()[0]},
        "servers": {},
    }  # fmt: skip

    def report(doc: dict[str, Any]) -> None:
        results["servers"][doc["target"]] = doc
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    for name in args.servers.split(","):
        run(name, args.requests, args.seed, report)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
