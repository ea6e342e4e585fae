"""Issue 7's partition figure, the minutes-long version of tests/agent/test_partition.py.

    .venv/bin/python bench/partition.py [--minutes 3] [--rps 20] [--small-cap-mb 0.25]

Three runs, each with ``edgeloop control`` and ``edgeloop agent`` as OS processes on loopback
ports and a client sending inference requests at ``--rps`` (every request sampled into the
telemetry outbox, a metrics snapshot every second):

1. ``stop``: the control plane frozen with SIGSTOP for ``--minutes``, then SIGCONT (64 MiB cap);
2. ``cap``: the control plane killed and restarted on the same port and home after ``--minutes``,
   with an outbox cap of ``--small-cap-mb`` so that samples are dropped;
3. ``kill9``: as 1, with the agent killed with SIGKILL half-way and started again on its home.

Each run's facts are checked (tests/agent/partition_run.py ``check``) and go to stdout as JSON and
into docs/reliability.md between the ``partition`` markers. Exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.agent.partition_run import check, run  # noqa: E402

BEGIN, END = "<!-- partition:begin -->", "<!-- partition:end -->"


def one(name: str, **kwargs: Any) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"el-partition-{name}-"))
    try:
        facts = run(tmp, reconnect_timeout_s=180.0, **kwargs)
        try:
            check(facts)
            facts["checks"] = "held"
        except AssertionError as exc:
            facts["checks"] = f"FAILED: {exc}"[:500]
        return facts
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def row(name: str, f: dict[str, Any]) -> str:
    answers = f["partition_answers"]
    if "run1" in f:
        answers = {k: answers.get(k, 0) + f["run1"]["answers"].get(k, 0)
                   for k in {*answers, *f["run1"]["answers"]}}  # fmt: skip
    put = f["puts"]
    if "run1" in f:
        put = f"run 2: {put}; run 1 outbox at kill: {f['run1']['outbox_ids_at_kill']} ids"
    return (
        f"| {name} | {f['partition_measured_s']} | {answers} | {put} | {f['stored']} | "
        f"{f['stored_unique_ids']}/{f['stored_items']} | {f['outbox_dropped'] or 0} | "
        f"{f['reported_dropped'] or 0} | {f['drain_s']} | {f['checks']} |"
    )


def markdown(results: dict[str, dict[str, Any]], command: str) -> str:
    lines = [
        f"Command: `{command}` ({platform.node()}, Python {platform.python_version()}).",
        "",
        "| run | partition s | answers during it (status: n) | agent's puts by kind | "
        "stored by kind | unique ids / stored | outbox dropped | reported dropped | "
        "drain after reconnect s | checks |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [row(name, f) for name, f in results.items()]
    kill = results.get("kill9", {}).get("run1")
    if kill:
        lines += ["", f"kill9, run 1: {kill['outbox_ids_at_kill']} ids in the outbox file after "
                  f"SIGKILL, {kill['stored_ids_present']} of them stored after reconnection; "
                  f"samples stored from run 1 {kill['stored_before_kill'].get('sample', 0)} "
                  f"(its last status before the kill counted "
                  f"{kill['puts_at_last_status'].get('sample', 0)} put)."]  # fmt: skip
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = ROOT / "docs" / "reliability.md"
    body = doc.read_text()
    if BEGIN in body and END in body:
        head, rest = body.split(BEGIN, 1)
        body = head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1]
        doc.write_text(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--small-cap-mb", type=float, default=0.25)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    seconds = args.minutes * 60
    results = {
        "stop": one("stop", partition_s=seconds, rps=args.rps),
        "cap": one(
            "cap", partition_s=seconds, rps=args.rps, outbox_mb=args.small_cap_mb, cut="kill"
        ),
        "kill9": one("kill9", partition_s=seconds, rps=args.rps, kill=True),
    }
    command = "python bench/partition.py " + " ".join(sys.argv[1:])
    print(json.dumps(results, indent=1, default=str))
    if not args.no_docs:
        write_docs(markdown(results, command.strip()))
    return 0 if all(f["checks"] == "held" for f in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
