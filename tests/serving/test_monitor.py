"""The drift monitor on the serving path: profiles beside models, alarms in /metrics and the
JSON view, ground-truth labels joined by request id, and the bad inputs of the label routes.

A tiny real classifier (4 features -> softmax over 3 classes) is profiled on its reference
data: inputs, its own outputs on them, and labels that agree with it on a known share.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from tests.serving.harness import Harness, binary_request, json_request, serving
from tests.serving.test_serve_process import _ready_info, _start
from tests.tiny_models import make_linear_onnx

from edgeloop.monitoring import DriftMonitor, ReferenceProfile
from edgeloop.serving import ServerConfig
from edgeloop.serving.labels import JoinMap, Served
from edgeloop.serving.watch import MonitorEvent, Watch

FEATURES = 4


def _outputs(model: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": x.astype(np.float32)})[0])


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``linear.onnx`` with ``linear.profile.npz`` beside it (inputs, outputs and labels)."""
    folder = tmp_path_factory.mktemp("profiled")
    model = make_linear_onnx(folder / "linear.onnx", features=FEATURES)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, FEATURES)).astype(np.float32)
    probs = _outputs(model, x)
    y = probs.argmax(axis=1)
    flip = rng.random(600) < 0.1
    y[flip] = (y[flip] + 1) % 3
    monitor = DriftMonitor.fit(x, probs, y)
    (folder / "linear.profile.npz").write_bytes(monitor.profile.to_bytes())
    return model


def _stream(h: Harness, x: np.ndarray, prefix: str = "r") -> list[dict[str, Any]]:
    answers = []
    for i, row in enumerate(x):
        r = h.post("/predict", json={"features": row.tolist(), "request_id": f"{prefix}{i}"})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return answers


def _series(metrics: str, name: str, **labels: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_in_distribution_stream_raises_no_alarm(profiled: Path) -> None:
    x = np.random.default_rng(1).standard_normal((400, FEATURES))
    with serving([profiled]) as h:
        _stream(h, x)
        view = h.get("/v2/models/linear/monitor").json()
        metrics = h.metrics()
    assert view["state"] == "active"
    assert view["samples_seen"] == 400 and view["requests"] == 400
    assert view["alarms"] == {} and view["last_alarm"] is None
    assert view["scores"]["input"]["ratio"] < 1.0
    assert view["quality"]["nonfinite_samples"] == 0 and view["dropped"] == 0
    assert view["state_bytes"] > 0 and view["profile"]["classes"] == 3
    assert _series(metrics, "edgeloop_drift_score", model="linear", kind="input") is not None
    assert _series(metrics, "edgeloop_drift_alarms_total", model="linear") is None
    assert _series(metrics, "edgeloop_monitor_samples_total", model="linear") == 400.0


def test_shifted_stream_raises_an_input_alarm_in_metrics_and_view(profiled: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, FEATURES))
    x[:, 1] += 3.0  # feature 1 moves by 3 reference stds
    events: list[MonitorEvent] = []
    with serving([profiled]) as h:
        h.catalog.monitor_sinks.append(events.append)
        _stream(h, x)
        view = h.get("/v2/models/linear/versions/1/monitor").json()
        metrics = h.metrics()
    assert view["alarms"].get("input", 0) >= 1
    alarm = view["last_alarm"] if view["last_alarm"]["kind"] == "input" else None
    first = next(e for e in events if e.kind == "input")
    assert first.type.value == "drift" and first.score > first.threshold
    assert first.top_features[0][0] == 1  # the moved feature leads the evidence
    assert first.index < 100  # found within the first hundred shifted samples
    assert alarm is None or alarm["top_features"][0]["feature"] == 1
    assert view["scores"]["input"]["ratio"] > 1.0
    count = _series(metrics, "edgeloop_drift_alarms_total", model="linear", kind="input")
    assert count == view["alarms"]["input"]
    ratio = _series(metrics, "edgeloop_drift_score", model="linear", version="1", kind="input")
    assert ratio is not None and ratio > 1.0


def test_labels_set_the_windowed_accuracy_exactly(profiled: Path) -> None:
    x = np.random.default_rng(3).standard_normal((20, FEATURES))
    with serving([profiled]) as h:
        answers = _stream(h, x)
        # 15 labels agree with the answer, 5 do not: accuracy 15/20.
        labels = [
            {"request_id": a["request_id"], "label": a["prediction"] if i < 15 else
             (a["prediction"] + 1) % 3}
            for i, a in enumerate(answers)
        ]  # fmt: skip
        one = h.post("/predict/labels", json=labels[0])
        rest = h.post("/v2/models/linear/labels", json={"labels": labels[1:]})
        view = h.get("/v2/models/linear/monitor").json()
        metrics = h.metrics()
    assert one.status_code == 200 and one.json()["applied"] == 1
    assert rest.status_code == 200 and rest.json() == {
        "model": "linear", "applied": 19, "unknown": 0, "unknown_ids": []
    }  # fmt: skip
    assert view["performance"]["labelled"] == 20
    assert view["performance"]["accuracy"] == pytest.approx(0.75)
    assert view["performance"]["estimated_accuracy"] is not None
    assert _series(metrics, "edgeloop_windowed_accuracy", model="linear") == pytest.approx(0.75)
    assert _series(metrics, "edgeloop_labels_total", model="linear", outcome="applied") == 20.0
    assert _series(metrics, "edgeloop_estimated_accuracy", model="linear") is not None


def test_oip_requests_are_labelled_by_their_id(profiled: Path) -> None:
    x = np.random.default_rng(4).standard_normal((1, FEATURES)).astype(np.float32)
    with serving([profiled]) as h:
        body = {**json_request(x), "id": "oip-1"}
        answer = h.post("/v2/models/linear/infer", json=body).json()
        predicted = int(np.argmax(answer["outputs"][0]["data"]))
        ok = h.post("/v2/models/linear/labels", json={"request_id": "oip-1", "label": predicted})
        view = h.get("/v2/models/linear/monitor").json()
    assert ok.status_code == 200 and ok.json()["applied"] == 1
    assert view["performance"]["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{", 400, "not valid JSON"),
        (b"[1]", 400, "must be a JSON object"),
        (b'{"label": 1}', 400, "'request_id' must be"),
        (b'{"request_id": "r0", "label": "cat"}', 400, "'label' must be a class index"),
        (b'{"request_id": "r0", "label": true}', 400, "'label' must be a class index"),
        (b'{"request_id": "r0", "label": 3}', 400, "'label' 3 is not a class of the model"),
        (b'{"request_id": "r0", "label": [0, 1]}', 400, "'label' has 2 value"),
        (b'{"request_id": "nope", "label": 0}', 404, "request_id 'nope'"),
        (b'{"labels": 5}', 400, "'labels' must be a non-empty list"),
        (b'{"labels": [{"request_id": "r0", "label": 0}, {"request_id": "r1", "label": 7}]}',
         400, r"'labels\[1\].label' 7 is not a class"),
        (b'{"labels": [3]}', 400, r"'labels\[0\]' must be an object"),
        (b'{"request_id": "r0", "label": 0, "model": 5}', 400, "'model' must be the name"),
    ],
)  # fmt: skip
def test_bad_label_bodies_are_4xx_naming_the_field(
    profiled: Path, body: bytes, status: int, message: str
) -> None:
    x = np.random.default_rng(5).standard_normal((2, FEATURES))
    with serving([profiled]) as h:
        _stream(h, x)
        r = h.post("/v2/models/linear/labels", content=body)
        view = h.get("/v2/models/linear/monitor").json()
    assert r.status_code == status, r.text
    assert re.search(message, r.json()["error"]), r.json()["error"]
    assert view["performance"]["labelled"] == 0  # nothing applied from a refused body


def test_labels_are_taken_once_and_bounded(profiled: Path) -> None:
    x = np.random.default_rng(6).standard_normal((3, FEATURES))
    config = ServerConfig(label_batch_max=2, label_capacity=2)
    with serving([profiled], config) as h:
        answers = _stream(h, x)  # capacity 2: r0 is pushed out by r2
        first = h.post("/predict/labels", json={"request_id": "r1", "label": 0})
        again = h.post("/predict/labels", json={"request_id": "r1", "label": 0})
        evicted = h.post("/predict/labels", json={"request_id": "r0", "label": 0})
        flood = h.post(
            "/predict/labels",
            json={"labels": [{"request_id": f"r{i}", "label": 0} for i in range(3)]},
        )
        batch = h.post(
            "/predict/labels",
            json={"labels": [{"request_id": "r2", "label": answers[2]["prediction"]},
                             {"request_id": "gone", "label": 0}]},
        )  # fmt: skip
        view = h.get("/v2/models/linear/monitor").json()
    assert first.status_code == 200
    assert again.status_code == 404 and evicted.status_code == 404
    assert flood.status_code == 413 and "at most 2" in flood.json()["error"]
    assert batch.status_code == 200
    assert batch.json()["applied"] == 1 and batch.json()["unknown_ids"] == ["gone"]
    assert view["performance"]["labelled"] == 2
    assert view["labels"]["evicted"] == 1


def test_no_profile_serves_and_says_so(tmp_path: Path) -> None:
    model = make_linear_onnx(tmp_path / "bare.onnx", features=FEATURES)
    with serving([model]) as h:
        answer = h.post("/predict", json={"features": [0.1, 0.2, 0.3, 0.4], "request_id": "a"})
        view = h.get("/v2/models/bare/monitor")
        labels = h.post("/predict/labels", json={"request_id": "a", "label": 0})
        metrics = h.metrics()
    assert answer.status_code == 200
    assert view.status_code == 200
    assert view.json()["state"] == "no profile" and "bare.profile.npz" in view.json()["reason"]
    assert labels.status_code == 409 and "without a reference profile" in labels.json()["error"]
    assert _series(metrics, "edgeloop_drift_score", model="bare") is None


def test_a_profile_of_another_shape_is_refused_not_fatal(tmp_path: Path, profiled: Path) -> None:
    model = make_linear_onnx(tmp_path / "wide.onnx", features=6)
    x = np.random.default_rng(7).standard_normal((50, FEATURES))
    (tmp_path / "wide.profile.npz").write_bytes(DriftMonitor.fit(x).profile.to_bytes())
    (tmp_path / "junk.onnx").write_bytes(profiled.read_bytes())
    (tmp_path / "junk.profile.npz").write_bytes(b"not a profile")
    with serving([model, tmp_path / "junk.onnx"]) as h:
        ok = h.post("/predict/wide", json={"features": [0.0] * 6})
        wide = h.get("/v2/models/wide/monitor").json()
        junk = h.get("/v2/models/junk/monitor").json()
    assert ok.status_code == 200
    assert wide["state"] == "profile refused" and "[4]" in wide["reason"]
    assert junk["state"] == "profile refused" and "junk.profile.npz" in junk["reason"]


def test_sample_rate_and_explicit_profile_path(tmp_path: Path, profiled: Path) -> None:
    model = tmp_path / "other.onnx"
    model.write_bytes(profiled.read_bytes())
    config = ServerConfig(
        monitor_sample_rate=0.25,
        profiles={"other": profiled.with_name("linear.profile.npz")},
    )
    x = np.random.default_rng(8).standard_normal((40, FEATURES))
    with serving([model], config) as h:
        _stream(h, x)
        view = h.get("/v2/models/other/monitor").json()
    assert view["state"] == "active"
    assert view["requests"] == 40 and view["samples_seen"] == 10


def test_nonfinite_inputs_are_counted_as_quality(profiled: Path) -> None:
    events: list[MonitorEvent] = []
    with serving([profiled], ServerConfig(allow_nonfinite=True)) as h:
        h.catalog.monitor_sinks.append(events.append)
        body, headers = binary_request(np.array([[np.nan, 0, 0, 0]], dtype=np.float32))
        r = h.post("/v2/models/linear/infer", content=body, headers=headers)
        view = h.get("/v2/models/linear/monitor").json()
        metrics = h.metrics()
    assert r.status_code == 200, r.text
    assert view["quality"]["nonfinite_samples"] == 1
    assert view["quality"]["nonfinite_by_value"] == {"0": 1}
    assert [e.type.value for e in events] == ["quality"]
    assert _series(metrics, "edgeloop_quality_total", model="linear", problem="nonfinite") == 1.0


def test_real_edgeloop_serve_alarms_and_joins_labels_over_http(
    tmp_path: Path, profiled: Path
) -> None:
    """``edgeloop serve`` as an OS process picks up ``linear.profile.npz`` beside the model."""
    model = tmp_path / "linear.onnx"
    model.write_bytes(profiled.read_bytes())
    (tmp_path / "linear.profile.npz").write_bytes(
        profiled.with_name("linear.profile.npz").read_bytes()
    )
    x = np.random.default_rng(9).standard_normal((250, FEATURES))
    x[150:, 0] *= 4.0  # a gain on feature 0 from the 150th request
    proc = _start(str(model))
    try:
        info = _ready_info(proc)
        with httpx.Client(base_url=info["url"], timeout=30) as client:
            answers = [
                client.post("/predict", json={"features": r.tolist(), "request_id": f"q{i}"})
                for i, r in enumerate(x)
            ]
            assert all(a.status_code == 200 for a in answers)
            before = client.get("/v2/models/linear/monitor").json()
            wrong = {"request_id": "q0", "label": (answers[0].json()["prediction"] + 1) % 3}
            labelled = client.post("/v2/models/linear/labels", json=wrong)
            view = client.get("/v2/models/linear/monitor").json()
            metrics = client.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert before["samples_seen"] == 250
    assert labelled.status_code == 200 and view["performance"]["accuracy"] == 0.0
    assert view["alarms"].get("input", 0) >= 1
    assert view["last_alarm"] is not None and view["last_alarm"]["sample_index"] >= 150
    assert _series(metrics, "edgeloop_drift_alarms_total", model="linear", kind="input")
    assert _series(metrics, "edgeloop_windowed_accuracy", model="linear") == 0.0


def test_wrong_labels_over_a_full_window_raise_one_degradation_event(profiled: Path) -> None:
    profile = ReferenceProfile.from_bytes(profiled.with_name("linear.profile.npz").read_bytes())
    events: list[MonitorEvent] = []
    monitor = DriftMonitor.from_profile(profile)
    watch = Watch("linear", "1", monitor, "active", sinks=[events.append])
    assert profile.outputs is not None
    x = np.random.default_rng(10).standard_normal((250, FEATURES))
    probs = _outputs(profiled, x)
    for i in range(250):
        watch.update(x[i], probs[i])
        predicted = int(probs[i].argmax())
        monitor.record_label(predicted, (predicted + 1) % 3)  # every label says it was wrong
        watch.check_degradation()
    degraded = [e for e in events if e.type.value == "degradation"]
    assert len(degraded) == 1  # once, not again while it stays degraded
    event = degraded[0]
    assert event.kind == "accuracy" and event.score == 0.0
    assert event.threshold == pytest.approx(profile.outputs.reference_accuracy - 0.1)
    assert event.index == 199  # the first moment a full window of 200 labels was seen
    assert watch.alarms["degradation"] == 1


def test_the_join_map_expires_and_evicts() -> None:
    joins = JoinMap(capacity=2, ttl_s=10.0)
    joins.record("m", "a", Served("1", (0,), at=0.0))
    joins.record("m", "b", Served("1", (1,), at=5.0))
    joins.record("m", "c", Served("1", (2,), at=6.0))  # over capacity: "a" goes
    assert joins.evicted == 1 and joins.peek("m", "a", now=6.0) is None
    assert joins.peek("m", "b", now=15.0) is not None  # 10 s old: still fresh
    assert joins.peek("m", "b", now=15.5) is None and joins.expired == 1
    assert joins.take("m", "c") == Served("1", (2,), at=6.0) and len(joins) == 0


def test_edgeloop_serve_takes_a_profile_from_the_command_line(
    tmp_path: Path, profiled: Path
) -> None:
    """``--profile MODEL=PATH`` names a profile kept anywhere; without it nothing is monitored."""
    model = tmp_path / "linear.onnx"
    model.write_bytes(profiled.read_bytes())
    kept = tmp_path / "profiles" / "linear-v1.npz"
    kept.parent.mkdir()
    kept.write_bytes(profiled.with_name("linear.profile.npz").read_bytes())
    proc = _start(str(model), "--profile", f"linear={kept}", "--monitor-sample-rate", "1")
    try:
        info = _ready_info(proc)
        with httpx.Client(base_url=info["url"], timeout=30) as client:
            for row in np.random.default_rng(3).standard_normal((5, FEATURES)):
                assert client.post("/predict", json={"features": row.tolist()}).status_code == 200
            view = client.get("/v2/models/linear/monitor").json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert view["state"] != "no profile", view
    assert view["samples_seen"] == 5
