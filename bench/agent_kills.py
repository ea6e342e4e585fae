"""kill -9 campaign against the edge agent's updater: every restart must end on a valid model.

    .venv/bin/python bench/agent_kills.py [--per-boundary 20] [--random 100] [--seed 0]

For each updater state boundary (DOWNLOAD ... COMMIT, and ROLLBACK of a failing update) it runs
``--per-boundary`` cycles: a real agent process (``edgeloop agent``) that committed v1 starts
an update to v2 with ``EDGELOOP_AGENT_PAUSE_AT=<STATE>``, is killed with SIGKILL once it paused
there, is restarted, and must settle serving v1 or v2 as that state decides, with the restarted
agent's self-test of its active slot passing and an inference answered by that model. Then
``--random`` cycles kill the agent at a uniformly drawn moment within the measured duration of
an update (the draw is when to kill, not a figure). The state each kill landed in is read from
the agent's own record after the kill.

Counts, failures and the command go to stdout as JSON and into docs/reliability.md between the
``agent-kills`` markers. Exit status 0 when every cycle ended on a valid model.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.agent.agent_process import AgentProcess, idle_on  # noqa: E402
from tests.agent.fleet_stub import ControlStub, new_repository, publish  # noqa: E402
from tests.agent.kill_cycle import (  # noqa: E402
    EXPECTED,
    BoundaryNotReachedError,
    KillResult,
    cycle,
    enrolled_on_v1,
)
from tests.tiny_models import make_linear_onnx  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- agent-kills:begin -->", "<!-- agent-kills:end -->"


def update_duration(folder: Path, models: dict[int, Path], watch_s: float) -> float:
    """Seconds from asking a running agent for v2 to its settling there (one measured run)."""
    with ControlStub(new_repository(folder / "repo")) as stub:
        home = enrolled_on_v1(folder / "node", stub, models[1])
        publish(stub.repo, models[2], 2, version=2, watch_s=watch_s)
        agent = AgentProcess(home.root.parent, stub.url)
        try:
            start = time.monotonic()
            stub.set_desired(2)
            agent.wait_for(idle_on(2), what="v2")
            return time.monotonic() - start
        finally:
            agent.stop()


def run_one(work: Path, models: dict[int, Path], **kwargs: Any) -> KillResult | str:
    folder = Path(tempfile.mkdtemp(dir=work))
    try:
        return cycle(folder, models, **kwargs)
    except (AssertionError, TimeoutError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:2000]}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-boundary", type=int, default=20)
    parser.add_argument("--random", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--watch-s", type=float, default=1.0, help="health window of the random-moment updates"
    )
    parser.add_argument(
        "--features", type=int, default=512,
        help="input width of the random-moment models (512 x 1000 weights: a 2 MB artifact)",
    )  # fmt: skip
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/reliability.md")
    parser.add_argument(
        "--only", default="", help="comma-separated boundaries to run (implies --no-doc)"
    )
    args = parser.parse_args()
    draw = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="agent-kills-"))
    started = time.monotonic()
    models = {v: make_linear_onnx(work / f"linear-{v}.onnx", seed=v) for v in (1, 2)}
    boundary: dict[str, Counter[str]] = {}
    failures: list[str] = []
    restarts: list[float] = []
    only = [s for s in args.only.split(",") if s]
    for state, want in EXPECTED.items():
        if only and state not in only:
            continue
        counts: Counter[str] = Counter()
        for _ in range(args.per_boundary):
            result = run_one(work, models, pause_at=state)
            if isinstance(result, str):
                reached = not result.startswith(BoundaryNotReachedError.__name__)
                counts["failed" if reached else "not_reached"] += 1
                failures.append(f"{state}: {result}")
                continue
            restarts.append(result.restart_s)
            ok = result.killed_in == state and result.served == want and result.self_test_passed
            counts["ok" if ok else "wrong_end"] += 1
            if not ok:
                failures.append(f"{state}: {result}")
        boundary[state] = counts
        print(f"{state}: {dict(counts)}", file=sys.stderr, flush=True)
    big = {v: make_linear_onnx(work / f"big-{v}.onnx", args.features, 1000, seed=v) for v in (1, 2)}
    artifact_bytes = big[2].stat().st_size
    duration = update_duration(Path(tempfile.mkdtemp(dir=work)), big, args.watch_s)
    landed: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    random_failed = during = tries = 0
    while during < args.random and tries < 3 * args.random:
        tries += 1
        at = draw.uniform(0.0, duration)
        result = run_one(work, big, kill_after_s=at, watch_s=args.watch_s)
        if isinstance(result, str):
            random_failed += 1
            failures.append(f"random #{tries} at {at:.3f} s: {result}")
            continue
        restarts.append(result.restart_s)
        landed[result.killed_in or "none"] += 1
        ended[f"v{result.served}"] += 1
        during += not (result.killed_in or "IDLE").startswith("IDLE")
        if tries % 10 == 0:
            print(f"random: {tries} kills, landed {dict(landed)}", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    restarts.sort()
    summary = {
        "command": f"python bench/agent_kills.py --per-boundary {args.per_boundary} "
        f"--random {args.random} --seed {args.seed}" + (f" --only {args.only}" if only else ""),
        "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
        "per_boundary": {s: dict(c) for s, c in boundary.items()},
        "random": {
            "kills": tries,
            "during_update": during,
            "artifact_bytes": artifact_bytes,
            "watch_s": args.watch_s,
            "window_s": round(duration, 3),
            "landed_in": dict(landed),
            "ended_on": dict(ended),
            "failed": random_failed,
        },
        "kills_total": sum(sum(c.values()) - c.get("not_reached", 0) for c in boundary.values())
        + tries,
        "failures": failures,
        "restart_to_serving_s": {
            "n": len(restarts),
            "p50": restarts[len(restarts) // 2] if restarts else None,
            "max": restarts[-1] if restarts else None,
        },
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    if not (args.no_doc or only):
        write_doc(summary)
    return 0 if not failures else 1


def write_doc(summary: dict[str, Any]) -> None:
    lines = [
        BEGIN,
        f"Measured by `{summary['command']}` on {summary['machine']} "
        f"(wall time {summary['wall_s']} s).",
        "",
        "| boundary (pause hook) | cycles | killed there | ended on a valid model as expected "
        "| failed after the kill | never paused there (not killed) |",
        "|---|---|---|---|---|---|",
    ]
    for state, counts in summary["per_boundary"].items():
        cycles, missed = sum(counts.values()), counts.get("not_reached", 0)
        ok = counts.get("ok", 0)
        lines.append(
            f"| {state} | {cycles} | {cycles - missed} | {ok} | {cycles - missed - ok} | {missed} |"
        )
    r = summary["random"]
    landed = ", ".join(f"{k} {v}" for k, v in sorted(r["landed_in"].items()))
    ended = ", ".join(f"{k} {v}" for k, v in sorted(r["ended_on"].items()))
    restart = summary["restart_to_serving_s"]
    lines += [
        "",
        f"Random moments: {r['kills']} kills, each at a moment drawn uniformly within "
        f"{r['window_s']} s (one measured update of a {r['artifact_bytes']} B artifact with a "
        f"{r['watch_s']} s health window, from asking for v2 to settling); "
        f"{r['during_update']} landed during the update. The agent's record at the kill said: "
        f"{landed} (`IDLE@1`: not started yet, `IDLE@2`: already settled). After the restart: "
        f"{ended}; failed: {r['failed']}.",
        "",
        f"Restart to serving (process start to its ready line, n={restart['n']}): "
        f"p50 {_fmt(restart['p50'])} s, max {_fmt(restart['max'])} s.",
        "",
        f"Failures: {len(summary['failures'])}"
        + "".join(f"\n- {f}" for f in summary["failures"][:20]),
        END,
    ]
    text = DOC.read_text() if DOC.exists() else ""
    block = "\n".join(lines)
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
