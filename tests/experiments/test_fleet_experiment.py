"""A fleet A/B experiment across real processes: a control plane and an agent (OS processes),
two tiny classifiers published with reference profiles.

The challenger is made the better model on purpose: the ground-truth labels are its own
answers, so it is right on every labelled row and the champion only where the two agree. The
test starts the experiment, checks the node splits traffic by the configured share (within a
binomial bound), that the labels arrive per arm in the control plane's figures, that the
control loop's own look records the decision to promote (nobody reads the status), and that
promote rolls the challenger out through the guarded rollout. A second experiment (started by
the CLI with ``--split 50``, percent) puts the worse version beside it with an accuracy
guardrail: the control loop stops it by itself and reverts to the champion. Bad input (a
version with other inputs, an offline node, splits outside 0-100 included) is refused with the
documented status and leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from tests.agent.agent_process import AgentProcess
from tests.control.process import control_process
from tests.tiny_models import make_linear_onnx
from typer.testing import CliRunner

from edgeloop.cli.app import app as cli_app
from edgeloop.core.errors import ConflictError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.registry import Registry
from edgeloop.registry.profiles import profile_model
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.experiments import ExperimentResult
from edgeloop.sdk.manager import EdgeMLManager
from edgeloop.sdk.site import Site

MANIFEST = Manifest("lin", "onnx", (TensorSpec("input", (None, 4)),),
                    (TensorSpec("output", (None, 3)),))  # fmt: skip
WIDER = Manifest("lin", "onnx", (TensorSpec("input", (None, 5)),),
                 (TensorSpec("output", (None, 3)),))  # fmt: skip
SPLIT = 0.3
REQUESTS = 200
PLAN = {"soak_s": 0, "watch_s": 0.3}
WAIT_S = 90.0


def _wait(check: Any, what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


class Fleet:
    def __init__(self, client: ControlClient, token: str, agent: AgentProcess, truth: Any) -> None:
        self.client = client
        self.url, self.token = client.url, token
        self.agent = agent
        self.truth = truth  # the challenger's class for a row

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.client._http.post(path, json=body)

    def status(self, exp_id: str) -> dict[str, Any]:
        return dict(self.client.call("GET", f"/api/v1/experiments/{exp_id}"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-exp")
    reference = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    files = [make_linear_onnx(tmp / f"v{i}.onnx", seed=i) for i in (1, 2)]
    wider = make_linear_onnx(tmp / "v3.onnx", features=5, seed=3)  # other inputs: no A/B
    with Registry.open(Settings.load(tmp / "local")) as registry:
        local = [registry.publish(f, MANIFEST, profile=profile_model(f, reference)) for f in files]
        profiles = [registry.profile(v.ref)[1] for v in local]
        local.append(registry.publish(wider, WIDER))
        profiles.append(None)
        files.append(wider)
    session = ort.InferenceSession(str(files[1]), providers=["CPUExecutionProvider"])

    def truth(row: list[float]) -> int:
        out = session.run(None, {"input": np.asarray([row], dtype=np.float32)})[0]
        return int(np.argmax(out[0]))

    with control_process(tmp / "ctl", None, "--tick-s", "0.1") as ctl:
        token = (tmp / "ctl" / "control" / "admin.token").read_text().strip()
        with ControlClient(ctl.url, token) as client:
            for file, version, profile in zip(files, local, profiles, strict=True):
                client.publish_version(file, version, profile=profile)
            agent = AgentProcess(tmp / "node", ctl.url, poll_s=0.2,
                                 enroll_token=client.enrollment_token()["token"])  # fmt: skip
            try:
                agent.wait_enrolled()
                _wait(lambda: all(n["last_seen"] for n in client.nodes()), "a first report")
                yield Fleet(client, token, agent, truth)
            finally:
                agent.stop()


def _start(fleet: Fleet, **changes: Any) -> httpx.Response:
    body = {"name": "lin-v2", "model": "lin", "champion": 1, "challenger": 2, "split": SPLIT,
            "metric": "accuracy", "min_effect": 0.2, "plan": PLAN,
            "guardrails": {"error_rate": 0.05}, **changes}  # fmt: skip
    return fleet.post("/api/v1/experiments", body)


Served = tuple[Counter[int], Counter[int], list[dict[str, Any]]]


def _served(
    fleet: Fleet, rows: np.ndarray, prefix: str = "r", seen: list[float] | None = None
) -> Served:
    """Requests and right answers per version (as each answer names it), and the labels;
    ``seen`` collects each answer's confidence."""
    counts: Counter[int] = Counter()
    right: Counter[int] = Counter()
    labels = []
    for i, row in enumerate(rows):
        features = [float(v) for v in row]
        answer = fleet.agent.http.post("/predict", json={"features": features,
                                                         "request_id": f"{prefix}{i}"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        version, truth = int(answer.json()["model_version"]), fleet.truth(features)
        counts[version] += 1
        if seen is not None:
            seen.append(float(answer.json()["confidence"]))
        right[version] += int(answer.json()["prediction"] == truth)
        labels.append({"request_id": f"{prefix}{i}", "label": truth})
    return counts, right, labels


BAD = [  # (changes to a good start body, status, a word the error names)
    ({"challenger": 9}, 404, "lin:9"),
    ({"champion": 7}, 404, "lin:7"),
    ({"model": "nope"}, 404, "nope"),
    ({"challenger": 3}, 409, "input 'input': float32 [None, 4] -> float32 [None, 5]"),
    ({"split": 1.5}, 400, "1.5"),
    ({"split": 50}, 400, "as a fraction"),  # the API takes a share; percent is refused
    ({"split": None}, 400, "split is missing"),
    ({"shadow": True}, 400, "takes no split"),
    ({"shadow": True, "split": None}, 400, "accuracy is not measured on a shadow"),
    ({"split": 0}, 400, "split 0"),
    ({"split": -0.2}, 400, "-0.2"),
    ({"metric": "confidence", "guardrails": {"confidence": 0.1}}, 400, "both the metric"),
    ({"nodes": ["ghost"]}, 404, "ghost"),
    ({"selector": {"labels": {"site": "mars"}}}, 400, "mars"),
    ({"challenger": 1}, 400, "version 1"),
    ({"guardrails": {"recall": 0.1}}, 400, "recall"),
    ({"guardrails": {"error_rate": -1}}, 400, "-1"),
    ({"mixing": "three_point"}, 400, "three_point"),
    ({}, 409, "already in experiment"),  # a second experiment on the same model
]


def _refused(fleet: Fleet, changes: dict[str, Any], status: int, named: str) -> None:
    before = fleet.client.call("GET", "/api/v1/experiments")["experiments"]
    revisions = [n["desired_revision"] for n in fleet.client.nodes()]
    answer = _start(fleet, name="bad", **changes)
    assert answer.status_code == status, (changes, answer.text)
    assert named in answer.json()["error"], (changes, answer.text)
    assert fleet.client.call("GET", "/api/v1/experiments")["experiments"] == before
    assert [n["desired_revision"] for n in fleet.client.nodes()] == revisions


@pytest.mark.slow  # ~35 s wall on an idle 2-core machine, ~17 s of CPU (processes included)
def test_a_fleet_experiment_decides_promotes_and_reverts(fleet: Fleet) -> None:
    """One test on one fleet (its steps depend on each other; split across xdist workers,
    separate tests would each start a fleet)."""
    answer = _start(fleet)
    assert answer.status_code == 201, answer.text
    exp = answer.json()
    exp_id = exp["experiment_id"]
    assert exp["state"] == "STARTING" and exp["split"] == SPLIT

    for changes, status, named in BAD:  # refused, and nothing is left half-configured
        _refused(fleet, changes, status, named)
    for split in ("150", "0", "-5", "100"):  # the CLI's --split is percent, inside 0-100
        bad = _cli(fleet, "bad", "--champion", "1", "--challenger", "2", "--split", split)
        assert bad.exit_code != 0 and "outside 0-100" in str(bad.exception), bad.output
    assert fleet.post("/api/v1/experiments/exp-nope/promote", {}).status_code == 404
    early = fleet.post(f"/api/v1/experiments/{exp_id}/promote", {})
    assert early.status_code == 409, early.text  # no decision yet

    _wait(lambda: fleet.status(exp_id)["state"] == "RUNNING", "the start rollout")
    _wait(lambda: (fleet.status(exp_id)["node_status"] or {}) and all(
        n["state"] == "serving" for n in fleet.status(exp_id)["node_status"].values()),
        "the node serving both arms")  # fmt: skip

    rows = np.random.default_rng(7).standard_normal((REQUESTS, 4)).astype(np.float32)
    counts, right, labels = _served(fleet, rows)
    assert set(counts) == {1, 2}
    # The challenger's share is binomial(REQUESTS, SPLIT): within 4 standard deviations.
    bound = 4 * math.sqrt(REQUESTS * SPLIT * (1 - SPLIT))
    assert abs(counts[2] - REQUESTS * SPLIT) <= bound, counts

    applied = fleet.agent.http.post("/predict/labels", json={"labels": labels}).json()
    assert applied["applied"] == REQUESTS, applied

    def decided() -> bool:  # the listing only reads what the control loop's looks stored
        rows = fleet.client.call("GET", "/api/v1/experiments")["experiments"]
        return any(r["experiment_id"] == exp_id and r["decision"] for r in rows)

    _wait(decided, "the control loop's look to record a decision")
    doc = fleet.status(exp_id)
    assert "decision promote_treatment reached" in [h["detail"] for h in doc["history"]]
    champion, challenger = doc["arms"]["champion"], doc["arms"]["challenger"]
    assert (champion["requests"], challenger["requests"]) == (counts[1], counts[2])
    assert challenger["correct"] == counts[2] == right[2] and challenger["accuracy"] == 1.0
    assert champion["correct"] == right[1] < counts[1]
    # every answer had class scores: one top-1 confidence counted per request, per arm
    assert (champion["confidence_rows"], challenger["confidence_rows"]) == (counts[1], counts[2])
    assert doc["decision"] == "promote_treatment", doc["evidence"]
    evidence = doc["evidence"]["primary"]
    assert evidence["p_value"] <= 0.05 and evidence["cs_low"] > 0
    assert evidence["challenger_n"] == counts[2]

    promoted = fleet.post(f"/api/v1/experiments/{exp_id}/promote", {})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["state"] == "PROMOTING"
    _wait(lambda: fleet.status(exp_id)["state"] == "PROMOTED", "the promote rollout")

    # The node's experiment loop drops the router on its next poll after the commit.
    def left() -> dict[str, Any] | None:
        active = fleet.agent.status()["active"]
        return None if "experiment" in active else dict(active)

    active = _wait(left, "the node to leave the experiment")
    assert active["version"] == 2
    after, _, _ = _served(fleet, rows[:20])
    assert after == Counter({2: 20})

    # The CLI starts the next one (version 1, worse, back as the challenger) with an accuracy
    # guardrail; the control loop stops it by itself and reverts to the champion.
    cli = _cli(fleet, "lin-back", "--champion", "2", "--challenger", "1", "--split", "50",
               "--metric", "error_rate", "--guardrail", "accuracy:0")  # fmt: skip
    assert cli.exit_code == 0, cli.output
    second = json.loads(cli.stdout)["experiment_id"]
    assert json.loads(cli.stdout)["split"] == 0.5  # --split 50 is half the traffic
    with EdgeMLManager(Site("test", fleet.url, fleet.token)) as edge:
        _wait(lambda: edge.experiment_status(second).state == "RUNNING", "the CLI's start")
        status = edge.experiment_status(second)
        assert (status.champion, status.challenger, status["split"]) == (2, 1, 50.0)
        counts, right, labels = _served(fleet, rows, prefix="b")
        assert right[1] < counts[1] and right[2] == counts[2]
        fleet.agent.http.post("/predict/labels", json={"labels": labels}).raise_for_status()

        def stopped() -> bool:  # nobody reads the status: the listing shows stored state only
            return any(e.experiment_id == second and e.state == "REVERTED"
                       for e in edge.list_experiments())  # fmt: skip

        _wait(stopped, "the guardrail's stop by the control loop")
        doc = edge.experiment_status(second)
        assert doc.decision == "stopped_by_guardrail", doc.raw["evidence"]
        assert doc.raw["evidence"]["tripped"] == "accuracy"
        assert any("stopped by the accuracy guardrail" in h["detail"] for h in doc.raw["history"])
        with pytest.raises(ConflictError):
            edge.revert_experiment(second)  # it is over
        states = {e.experiment_id: e.state for e in edge.list_experiments()}
    assert states == {exp_id: "PROMOTED", second: "REVERTED"}  # before the shadow's
    _wait(lambda: "experiment" not in fleet.agent.status()["active"], "the node's split gone")
    after, _, _ = _served(fleet, rows[:20])
    assert after == Counter({2: 20})

    # A shadow experiment (the SDK): version 2 answers everything, version 1 gets a copy of
    # each request; the copies are counted as the challenger's arm.
    with EdgeMLManager(Site("test", fleet.url, fleet.token)) as edge:
        third = edge.start_experiment("lin", 2, 1, metric="error_rate", shadow=True,
                                      plan=PLAN, guardrails={}).experiment_id  # fmt: skip
        _wait(lambda: edge.experiment_status(third).state == "RUNNING", "the shadow's start")
        _wait(lambda: all(n["state"] == "serving" for n in
                          (edge.experiment_status(third).raw["node_status"] or {"-": {"state": 0}})
                          .values()), "the node serving the shadow")  # fmt: skip
        confidences: list[float] = []
        answered, _, _ = _served(fleet, rows[:20], prefix="s", seen=confidences)
        assert answered == Counter({2: 20})  # the shadow answers nobody

        def copied() -> ExperimentResult | None:
            doc = edge.experiment_status(third)
            arms = (doc.champion_arm, doc.challenger_arm)
            return doc if arms[0] and arms[1] and arms[1].requests == 20 else None

        doc = _wait(copied, "the shadow's copies in the challenger's arm")
        assert doc.raw["mode"] == "shadow" and doc.champion_arm.requests == 20  # type: ignore[union-attr]
        # the copies' confidence is the challenger's; the answers' the champion's
        assert doc.challenger_arm.confidence_rows == 20  # type: ignore[union-attr]
        assert doc.champion_arm.confidence_mean == pytest.approx(  # type: ignore[union-attr]
            sum(confidences) / 20, rel=1e-5
        )
        assert doc.caveat is None  # error_rate is no proxy
        assert edge.revert_experiment(third).state == "REVERTING"  # (its rollout as above)

    # A node enrolled but never heard from is offline: 409 naming it, nothing configured.
    enroll = {"enrollment_token": fleet.client.enrollment_token()["token"], "name": "ghost-1"}
    fleet.post("/api/v1/enroll", enroll).raise_for_status()
    _refused(fleet, {"nodes": ["ghost-1"], "champion": 2, "challenger": 1}, 409, "ghost-1")


def _cli(fleet: Fleet, name: str, *args: str) -> Any:
    return CliRunner().invoke(cli_app, [
        "fleet", "experiment", "start", name, "--model", "lin", *args, "--watch-s", "0.3",
        "--soak-s", "0", "--control", fleet.url, "--token", fleet.token,
        "--format", "json"])  # fmt: skip
