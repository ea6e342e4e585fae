"""What the rollout timeline adds to a rollout's page, in process (docs/ui.md).

Seeds the database bench/ui_bench.py seeds (``--nodes``; the whole-fleet rollout's first wave
has eight updater events per node), then times, on one connection, the rollout page's read
without the timeline (``rollout_view.read``) and the timeline's read and render
(``timeline.read`` + ``timeline.part``): the median of ``--runs`` after 5 warm-ups.

    .venv/bin/python bench/ui_timeline_bench.py [--nodes 1000] [--runs 40]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeloop.control.plane import ControlPlane  # noqa: E402
from edgeloop.control.ui import rollout_view, timeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("ui_bench", ROOT / "bench" / "ui_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with tempfile.TemporaryDirectory(prefix="ui-timeline-") as tmp:
        home = Path(tmp) / "home"
        rid = bench.seed(home, args.nodes)["everywhere"]
        plane, _ = ControlPlane.open(home, admin_token=bench.ADMIN)
        view_ms, line_ms = [], []
        try:
            with plane.db.engine.connect() as conn:
                for i in range(5 + args.runs):
                    t0 = time.perf_counter()
                    view = rollout_view.read(conn, rid)
                    t1 = time.perf_counter()
                    line = timeline.read(conn, view)
                    html = timeline.part(line)
                    t2 = time.perf_counter()
                    if i >= 5:
                        view_ms.append((t1 - t0) * 1000)
                        line_ms.append((t2 - t1) * 1000)
        finally:
            plane.close()
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "runs": args.runs,
                "lanes": len(line.lanes) - 1,
                "steps": sum(len(lane.steps) for lane in line.lanes),
                "timeline_html_bytes": len(html),
                "rollout_read_median_ms": round(statistics.median(view_ms), 2),
                "timeline_read_render_median_ms": round(statistics.median(line_ms), 2),
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
