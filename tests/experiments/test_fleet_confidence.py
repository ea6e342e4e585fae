"""Confidence as a fleet experiment's metric: the server's per-version top-1 sums, the node's
counts since the experiment was applied, the control plane's exact merge and restart ledger,
and a confidence experiment through the API (in-process) reaching a decision with its caveat."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.control.harness import control
from tests.experiments.test_fleet_parts import _exp, _report
from tests.tiny_models import make_linear_onnx

from edgeloop.agent.arm_counts import ArmCounts, read_counts
from edgeloop.control.experiment_arms import sum_reports
from edgeloop.control.experiment_look import look
from edgeloop.control.experiments import PROXY_CAVEAT
from edgeloop.experiments import ContinuousSummary, ExperimentState, Metric
from edgeloop.serving.confidence_tally import ConfidenceTally
from edgeloop.serving.metrics import ServerMetrics


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def test_the_tally_sums_each_answered_rows_top1_and_skips_rows_without_classes() -> None:
    tally = ConfidenceTally()
    tally.observe("m", "1", "primary", np.array([[0.2, 0.7, 0.1]], dtype=np.float32))
    n, s, q = tally.read("m", "1", "primary")
    assert n == 1 and s == pytest.approx(0.7, abs=1e-6) and q == pytest.approx(0.49, abs=1e-6)

    logits = np.random.default_rng(1).standard_normal((40, 5)) * 3
    logits[7] = np.nan  # no class can be read from it: not counted
    tally.observe("m", "2", "primary", logits)
    top = _softmax(np.delete(logits, 7, axis=0)).max(axis=1)
    n, s, q = tally.read("m", "2", "primary")
    assert n == 39 and s == pytest.approx(top.sum(), rel=1e-12)
    assert q == pytest.approx((top**2).sum(), rel=1e-12)
    one = np.array([[2.0, 0.0, -1.0]])  # one short row (plain Python) = the batch path
    tally.observe("m", "3", "shadow", one)
    tally.observe("m", "3", "shadow", np.repeat(one, 2, axis=0))
    n, s, _ = tally.read("m", "3", "shadow")
    assert n == 3 and s == pytest.approx(3 * _softmax(one)[0].max(), rel=1e-12)
    assert tally.read("m", "3", "primary") == (0, 0.0, 0.0)  # roles apart

    for no_classes in (np.ones((5, 1)), np.ones(5), np.float32(0.3), np.ones((0, 3))):
        tally.observe("score", "1", "primary", np.asarray(no_classes))
    tally.observe("score", "1", "primary", None)
    assert tally.read("score", "1", "primary") == (0, 0.0, 0.0)


def test_the_node_reports_confidence_since_the_experiment_and_after_a_restart() -> None:
    metrics = ServerMetrics()
    rows = np.array([[0.1, 0.9], [0.4, 0.6]])
    metrics.confidence.observe("lin", "1", "primary", rows)  # before the experiment
    base = read_counts(metrics, {}, "lin", ["1", "2"], shadow="2")
    metrics.confidence.observe("lin", "1", "primary", rows[:1])
    metrics.confidence.observe("lin", "2", "shadow", rows)  # a shadow's copies: its arm
    metrics.confidence.observe("lin", "2", "primary", rows)  # not the shadow arm's
    now = read_counts(metrics, {}, "lin", ["1", "2"], shadow="2")
    since = {v: c.minus(base[v]).to_dict()["confidence"] for v, c in now.items()}
    assert since["1"] == {"count": 1, "sum": pytest.approx(0.9), "sum_sq": pytest.approx(0.81)}
    assert since["2"] == {"count": 2, "sum": pytest.approx(1.5), "sum_sq": pytest.approx(1.17)}
    # A restarted server counts from 0 again: below the base, everything since is reported.
    fresh = ArmCounts(requests=3, confidence_count=1, confidence_sum=0.5, confidence_sum_sq=0.25)
    assert fresh.minus(ArmCounts(requests=1, confidence_count=2, confidence_sum=1.0)) == fresh


def _arm(values: list[float], requests: int | None = None) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    counts = ArmCounts(requests=len(values) if requests is None else requests,
                       confidence_count=v.size, confidence_sum=float(v.sum()),
                       confidence_sum_sq=float(v @ v))  # fmt: skip
    return counts.to_dict()


def test_the_fleet_merge_of_node_sums_is_the_pooled_summary() -> None:
    rng = np.random.default_rng(15)
    nodes = [rng.beta(8, 2, size=n).tolist() for n in (1, 250, 3_000)]
    reports = [(f"n{i}", "pi4", _report("exp-1", {"1": _arm(v), "2": _arm(v[:1])}))
               for i, v in enumerate(nodes)]  # fmt: skip
    fleet = sum_reports("exp-1", ("1", "2"), reports)
    merged = fleet.control.summary(Metric.CONFIDENCE, 0.1)
    pooled = ContinuousSummary.from_values(np.concatenate(nodes))
    assert isinstance(merged, ContinuousSummary)
    assert merged.count == pooled.count == 3_251
    assert merged.mean == pytest.approx(pooled.mean, rel=1e-12)
    assert merged.m2 == pytest.approx(pooled.m2, rel=1e-9)
    shown = fleet.control.to_dict()
    assert shown["confidence_rows"] == 3_251 and shown["confidence_mean"] == merged.mean
    empty = sum_reports("exp-1", ("1", "2"), [("n", "pi4", _report("exp-1", {"1": {}}))])
    assert empty.control.summary(Metric.CONFIDENCE, 0.1) == ContinuousSummary(0)
    assert empty.control.to_dict()["confidence_mean"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {"count": 2, "sum": 2.5, "sum_sq": 2.0},  # a mean above 1
        {"count": 2, "sum": 1.0, "sum_sq": 1.5},  # squares above the sum
        {"count": 2, "sum": float("nan"), "sum_sq": 0.5},
        {"count": 2, "sum": True, "sum_sq": 0.5},
        {"count": 2},  # a count without its sums would bias the mean
        {"count": -1, "sum": 0.0, "sum_sq": 0.0},
        "lots",
    ],
)
def test_a_malformed_confidence_block_counts_nothing(bad: Any) -> None:
    arm = {**_arm([0.9, 0.8]), "confidence": bad}
    fleet = sum_reports("exp-1", ("1", "2"), [("n", "pi4", _report("exp-1", {"1": arm}))])
    assert fleet.control.summary(Metric.CONFIDENCE, 0.1) == ContinuousSummary(0)
    assert fleet.control.requests == 2  # the rest of the arm still counts


def _confidence_exp(**changes: Any) -> Any:
    config = {**_exp().config, "metric": "confidence", "min_effect": 0.05}
    return _exp(config=config, **changes)


def test_an_agent_restart_never_takes_the_confidence_sums_back() -> None:
    exp, seen = _confidence_exp(), []
    before = [0.9] * 10 + [0.7] * 10
    sequence = [
        _report("exp-1", {"1": _arm(before[:10]), "2": _arm(before[:12])}),
        _report("exp-1", {"1": _arm(before), "2": _arm(before)}),
        None,  # restarting: no experiment in the report
        _report("exp-1", {"1": _arm([0.5] * 3), "2": _arm([0.6] * 4)}, since="t1"),
        _report("exp-1", {"1": _arm([0.5] * 5), "2": _arm([0.6] * 6)}, since="t1"),
    ]
    for report in sequence:
        doc, tests = look(exp, [("a", "pi4", report)])
        exp = _confidence_exp(look=doc, tests=tests)
        seen.append([doc["arms"][a]["confidence_rows"] for a in ("champion", "challenger")])
    assert all(a <= b for x, y in itertools.pairwise(seen) for a, b in zip(x, y, strict=True))
    assert seen[-1] == [20 + 5, 20 + 6]
    mean = exp.look["arms"]["champion"]["confidence_mean"]
    assert mean == pytest.approx((sum(before) + 2.5) / 25)


def test_a_model_without_class_scores_waits_with_a_reason() -> None:
    arms = {"1": {"requests": 50}, "2": {"requests": 50}}  # no confidence block at all
    doc, tests = look(_confidence_exp(), [("a", "pi4", _report("exp-1", arms))])
    assert doc["verdict"] is None and "no confidence observations" in doc["reason"]
    assert tests == ExperimentState()


def test_a_confidence_experiment_through_the_api_decides_with_its_caveat(tmp_path: Path) -> None:
    """In-process control plane, one node reporting over HTTP: the start is accepted, the
    node's per-arm confidence sums lead to promote_treatment, and every document of the
    experiment says the metric is a proxy."""
    rng = np.random.default_rng(3)
    with control(tmp_path / "home") as ctl:
        for seed in (1, 2):
            ctl.publish(make_linear_onnx(tmp_path / f"v{seed}.onnx", seed=seed), "lin")
        node = ctl.enroll("n1")
        node.report({"revision": 0, "active": None})
        body = {"name": "conf", "model": "lin", "champion": 1, "challenger": 2, "split": 0.5,
                "metric": "confidence", "min_effect": 0.05, "plan": {"soak_s": 0},
                "guardrails": {"error_rate": 0.05}}  # fmt: skip
        both = ctl.request("POST", "/api/v1/experiments", headers=ctl.admin,
                           json={**body, "guardrails": {"confidence": 0.1}})  # fmt: skip
        assert both.status_code == 400 and "both the metric and a guardrail" in both.text
        started = ctl.ok("POST", "/api/v1/experiments", json=body)
        exp_id = started["experiment_id"]
        assert started["caveat"] == PROXY_CAVEAT
        node.act()  # the champion with the experiment block
        ctl.tick(2)
        assert ctl.ok("GET", f"/api/v1/experiments/{exp_id}")["state"] == "RUNNING"
        champion, challenger = rng.beta(6, 4, 400).tolist(), rng.beta(9, 1, 400).tolist()
        arms = {"1": _arm(champion), "2": _arm(challenger)}
        experiment = {"id": exp_id, "state": "serving", "since": "t0", "arms": arms}
        node.report({"revision": node.desired()["revision"],
                     "active": {**(node.active or {}), "experiment": experiment}})  # fmt: skip
        doc = ctl.ok("GET", f"/api/v1/experiments/{exp_id}")
        assert doc["decision"] == "promote_treatment", doc["evidence"] or doc["waiting_for"]
        assert doc["caveat"] == PROXY_CAVEAT
        primary = doc["evidence"]["primary"]
        assert primary["metric"] == "confidence" and primary["cs_low"] > 0
        assert primary["p_value"] <= 0.05
        assert primary["challenger_mean"] == pytest.approx(np.mean(challenger), rel=1e-12)
        assert doc["arms"]["challenger"]["confidence_rows"] == 400
        assert f"decision promote_treatment reached ({PROXY_CAVEAT})" in [
            h["detail"] for h in doc["history"]
        ]
        rows = ctl.ok("GET", "/api/v1/experiments")["experiments"]
        assert [r["caveat"] for r in rows] == [PROXY_CAVEAT]
        promoted = ctl.ok("POST", f"/api/v1/experiments/{exp_id}/promote", json={})
        assert any(PROXY_CAVEAT in h["detail"] for h in promoted["history"])


def test_a_start_on_a_model_without_class_scores_is_refused() -> None:
    from edgeloop.control.experiments import _has_class_scores
    from edgeloop.core.errors import ConfigError
    from edgeloop.core.types import TensorSpec

    shapes: tuple[tuple[int | None, ...], ...] = ((None, 1), (None,), (None, 1, 1))
    for shape in shapes:
        with pytest.raises(ConfigError, match="one value a row"):
            _has_class_scores("m", (TensorSpec("y", shape),))
    for shape in ((None, 3), (None, None), (None, 2, 5)):  # classes, or maybe
        _has_class_scores("m", (TensorSpec("y", shape),))


def test_only_a_model_serving_more_than_one_version_tallies_confidence(tmp_path: Path) -> None:
    """The server counts confidence only while a model's routing names two or more versions
    (a split or a shadow: an experiment); a model served alone, and one with two versions
    loaded but no routing, count nothing. In-process server, real ONNX models."""
    from tests.serving.harness import serving
    from tests.serving.models import make_repository

    from edgeloop.serving import Routing, ServerConfig, Split
    from edgeloop.serving.confidence_tally import tallied

    assert not tallied(Routing()) and not tallied(Routing(Split((("1", 1.0),))))
    assert tallied(Routing(Split((("1", 1.0), ("2", 1.0)))))
    assert tallied(Routing(Split((("1", 1.0),)), shadow="2"))

    repo = tmp_path / "repo"
    make_repository(repo, "clf", {1: 1, 2: 2})
    make_repository(repo, "solo", {1: 3})
    x = np.random.default_rng(5).standard_normal((1, 4)).astype(np.float32)
    split = Routing(Split((("1", 50.0), ("2", 50.0))))
    with serving([repo], ServerConfig(seed=3, routing={"clf": split})) as s:
        tally = s.server.metrics.confidence
        served: dict[str, int] = {"1": 0, "2": 0}
        for _ in range(40):
            served[s.infer("clf", x).json()["model_version"]] += 1
            assert s.infer("solo", x).status_code == 200
        assert min(served.values()) > 0  # both arms answered
        for v in ("1", "2"):
            assert tally.read("clf", v, "primary")[0] == served[v]
        assert tally.read("solo", "1", "primary") == (0, 0.0, 0.0)

        s.catalog.model("clf").routing = Routing()  # the experiment ended: counting stops
        for _ in range(10):
            assert s.infer("clf", x).status_code == 200
            assert s.infer("clf", x, version="1").status_code == 200
        assert [tally.read("clf", v, "primary")[0] for v in ("1", "2")] == [
            served["1"], served["2"]]  # fmt: skip

        s.catalog.model("clf").routing = Routing(Split((("1", 1.0),)), shadow="2")
        for _ in range(10):
            assert s.infer("clf", x).status_code == 200
        s.call(s.server.service.drain)
        assert tally.read("clf", "1", "primary")[0] == served["1"] + 10
        assert tally.read("clf", "2", "shadow")[0] == 10
