"""deploy/prometheus and deploy/grafana: promtool accepts the config and the rules, and every
series an expression names is one edgeloop exports (a renamed metric fails here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "edgeloop-fleet.json"
SERIES = re.compile(r"\bedgeloop_[a-z0-9_]+")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is absent (apt-get install prometheus)"
)


def _exported() -> set[str]:
    """Metric names written in src/: literal ``"edgeloop_x"`` and ``f"edgeloop_{name}"`` with
    ``"name"`` in the same file."""
    names: set[str] = set()
    for path in (ROOT / "src" / "edgeloop").rglob("*.py"):
        text = path.read_text()
        names.update(re.findall(r"[\"'](edgeloop_[a-z0-9_]+)[\"']", text))
        if 'f"edgeloop_{' in text:
            names.update(f"edgeloop_{n}" for n in re.findall(r"\(\"([a-z0-9_]+)\",", text))
    return names


def _base(series: str) -> str:
    for suffix in SUFFIXES:
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def _expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = (PROM / "edgeloop-rules.yml").read_text()
    exprs += re.findall(r"expr: (.+(?:\n {12}.+)*)", rules)
    return exprs


def test_every_expression_names_an_exported_series() -> None:
    exported = _exported()
    assert "edgeloop_drift_score" in exported and "edgeloop_fleet_nodes" in exported
    assert "edgeloop_windowed_accuracy" in exported  # built as f"edgeloop_{name}"
    exprs = _expressions()
    assert len(exprs) >= 15
    named = {s for e in exprs for s in SERIES.findall(e)}
    unknown = sorted(s for s in named if _base(s) not in exported)
    assert unknown == [], f"series not exported by src/edgeloop: {unknown}"


def test_the_dashboard_is_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "edgeloop-fleet" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)
    assert all(t["refId"] and t["expr"] for p in dash["panels"] for t in p["targets"])


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(PROM / "edgeloop-rules.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


@needs_promtool
def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    for name in ("prometheus.yml", "edgeloop-rules.yml"):
        shutil.copy(PROM / name, tmp_path / name)
    (tmp_path / "admin.token").write_text("an-admin-token\n")  # the file the config names
    done = subprocess.run(
        [str(PROMTOOL), "check", "config", "prometheus.yml"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
