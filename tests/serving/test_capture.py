"""The capture policy (serving/capture.py) and its per-version state (serving/capture_sink.py).

Pure parts with arrays made here; one in-process server (real ONNX model, real HTTP app) for
the path from a request to a JSON Lines file, labels included.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from tests.serving.harness import serving
from tests.tiny_models import make_linear_onnx

from edgeloop.control.captures import tensor_values
from edgeloop.core.errors import ConfigError, ConflictError
from edgeloop.monitoring import DriftMonitor
from edgeloop.serving.capture import (
    NO_SCORES,
    CaptureSpec,
    Reason,
    Scores,
    decide,
    parse_reasons,
    row_scores,
    scores,
)
from edgeloop.serving.capture_record import Kept
from edgeloop.serving.capture_sink import Capturer
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.watch import EventType, MonitorEvent, probabilities


def _logits(rows: list[list[float]]) -> dict[str, np.ndarray]:
    return {"output": np.asarray(rows, dtype=np.float32)}


def _feeds(n: int, features: int = 4) -> dict[str, np.ndarray]:
    return {"input": np.arange(n * features, dtype=np.float32).reshape(n, features)}


def _run(capturer: Capturer, spec: CaptureSpec, outputs: dict[str, np.ndarray], rid: str) -> int:
    n = next(iter(outputs.values())).shape[0]
    return capturer.observe(spec, "m", "1", rid, _feeds(n), outputs)


CONFIDENT = [10.0, 0.0, 0.0]  # top-1 ~1.0
UNSURE = [0.1, 0.0, 0.0]  # top-1 ~0.35, margin ~0.03


# -- parsing and bad input ---------------------------------------------------------------------


def test_policy_text_with_defaults_round_trips() -> None:
    spec = CaptureSpec.parse("uncertain:0.6,drift,random:0.01", max_bytes=1000, per_class=5)
    assert dict(spec.reasons) == {Reason.UNCERTAIN: 0.6, Reason.DRIFT: 300.0, Reason.RANDOM: 0.01}
    assert spec.policy == "uncertain:0.6,drift:300,random:0.01"
    again = CaptureSpec.from_json(spec.to_dict())
    assert again == spec
    assert CaptureSpec.from_json("margin") == CaptureSpec.parse("margin:0.1")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("uncertain:1.5", "1.5"),
        ("uncertain:-0.2", "-0.2"),
        ("margin:abc", "abc"),
        ("random:0", "0"),
        ("drift:-5", "-5"),
        ("unsure:0.5", "unsure"),
        ("uncertain,uncertain:0.4", "given twice"),
        ("uncertain,,drift", "empty reason"),
        ("", "empty reason"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_value(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_reasons(text)
    assert named in caught.value.message


def test_an_unknown_reason_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: uncertain, margin, drift, random"):
        CaptureSpec.parse("uncertain,hard")


def test_a_zero_byte_cap_is_refused_and_says_how_to_turn_capture_off() -> None:
    with pytest.raises(ConfigError) as caught:
        CaptureSpec.parse("uncertain", max_bytes=0)
    assert "max_bytes 0" in caught.value.message
    assert caught.value.hint is not None and "leave out --capture" in caught.value.hint
    with pytest.raises(ConfigError, match="per_class 0"):
        CaptureSpec.parse("uncertain", per_class=0)
    with pytest.raises(ConfigError, match="unknown key"):
        CaptureSpec.from_json({"policy": "drift", "cap": 5})


def test_the_server_config_carries_the_policy() -> None:
    spec = CaptureSpec.parse("uncertain")
    config = ServerConfig(capture=spec)
    assert config.to_dict()["capture"]["policy"] == "uncertain:0.6"
    assert ServerConfig().to_dict()["capture"] is None  # capture off by default


# -- the decision ------------------------------------------------------------------------------


def test_each_reason_holds_on_its_own() -> None:
    spec = CaptureSpec.parse("uncertain:0.6,margin:0.1,drift:60,random:0.25")
    sure = Scores(0, 0.95, 0.9)
    assert decide(spec, sure, None, 0.9) == ()
    assert decide(spec, Scores(0, 0.5, 0.3), None, 0.9) == (Reason.UNCERTAIN,)
    assert decide(spec, Scores(0, 0.7, 0.05), None, 0.9) == (Reason.MARGIN,)
    assert decide(spec, sure, 30.0, 0.9) == (Reason.DRIFT,)
    assert decide(spec, sure, 61.0, 0.9) == ()  # the window closed
    assert decide(spec, sure, None, 0.1) == (Reason.RANDOM,)
    assert decide(spec, Scores(None, None, None), None, 0.9) == ()  # no classes: no confidence


def test_one_row_in_plain_python_scores_as_the_array_path_does() -> None:
    rng = np.random.default_rng(4)
    rows = [rng.standard_normal(10), rng.dirichlet(np.ones(10)), np.full(3, 1 / 3),
            np.asarray([0.0, 0.0]), np.asarray([np.inf, 1.0]), np.asarray([0.9])]  # fmt: skip
    for row in rows:
        fast = row_scores(row.tolist())
        with np.errstate(all="ignore"):
            slow = scores(probabilities(row[None]))[0] if row.size > 1 else NO_SCORES
        assert fast.predicted == slow.predicted
        if slow.confidence is None:
            assert fast.confidence is None
        else:
            assert fast.confidence == pytest.approx(slow.confidence)
            assert fast.margin == pytest.approx(slow.margin)


def test_scores_read_top1_and_margin() -> None:
    row, bad = scores(np.asarray([[0.2, 0.5, 0.3], [np.nan, 0.5, 0.5]]))
    assert row.predicted == 1 and row.confidence == pytest.approx(0.5)
    assert row.margin == pytest.approx(0.2)
    assert bad.confidence is None and bad.predicted is None
    assert scores(np.asarray([[0.7], [0.2]]))[1].confidence is None  # one value: no classes


# -- the budget: quotas, byte cap ----------------------------------------------------------------


def test_per_class_quota_keeps_at_most_n_rows_of_each_predicted_class() -> None:
    capturer = Capturer()
    spec = CaptureSpec.parse("uncertain:0.9", per_class=3)
    rows = [UNSURE] * 5 + [[0.0, 0.1, 0.0]] * 2  # 5 predicted 0, 2 predicted 1
    assert _run(capturer, spec, _logits(rows), "r1") == 5
    doc = capturer.status()["m:1"]
    assert doc["kept_per_class"] == {"0": 3, "1": 2}
    assert doc["over_quota"] == 2 and doc["seen"] == 7 and doc["kept"] == 5


def test_byte_cap_bounds_what_is_kept_and_counts_the_rest() -> None:
    kept: list[dict[str, Any]] = []
    probe = Capturer()
    probe.sinks.append(lambda k: kept.append(k.record()))
    _run(probe, CaptureSpec.parse("uncertain:0.9"), _logits([UNSURE]), "r0")
    one = probe.status()["m:1"]["bytes"]
    assert one == len(orjson.dumps(kept[0]))  # a record's size is its JSON encoding
    capturer = Capturer()
    spec = CaptureSpec.parse("uncertain:0.9", max_bytes=int(one * 3.5))
    for i in range(10):
        _run(capturer, spec, _logits([UNSURE]), f"r{i}")
    doc = capturer.status()["m:1"]
    assert doc["kept"] == 3 and doc["over_bytes"] == 7
    assert doc["bytes"] <= spec.max_bytes


def test_a_captured_record_holds_inputs_outputs_version_reason_time_and_request_id() -> None:
    records: list[dict[str, Any]] = []
    capturer = Capturer()
    capturer.sinks.append(lambda k: records.append(k.record()))
    spec = CaptureSpec.parse("uncertain:0.6")
    _run(capturer, spec, _logits([CONFIDENT, UNSURE]), "req-9")
    assert len(records) == 1
    r = records[0]
    assert (r["type"], r["model"], r["model_version"], r["request_id"]) == (
        "sample", "m", "1", "req-9",
    )  # fmt: skip
    assert r["sample_id"] == "req-9#1" and r["row"] == 1 and r["reasons"] == ["uncertain"]
    (tensor,) = r["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("input", "<f4", [1, 4])
    assert tensor_values(tensor).tolist() == [4.0, 5.0, 6.0, 7.0]
    assert tensor_values(r["outputs"][0]).tolist() == pytest.approx(UNSURE)
    assert r["predicted"] == 0 and r["confidence"] < 0.6 and r["at"].endswith("+00:00")
    capturer.label("m", [("req-9", (1, 2)), ("other", (0,))])
    assert records[1] == {
        "type": "label", "model": "m", "model_version": "1", "request_id": "req-9",
        "sample_id": "req-9#1", "label": 2, "at": records[1]["at"],
    }  # fmt: skip
    assert len(records) == 2  # no label record for a request that was not captured


def test_encoded_is_the_record_as_json_and_its_size_is_known_before() -> None:
    kept: list[Kept] = []
    capturer = Capturer()
    capturer.sinks.append(kept.append)
    spec = CaptureSpec.parse("uncertain:0.9")
    swapped = {"input": np.arange(3 * 8 * 8, dtype=">f4").reshape(1, 3, 8, 8)}  # big-endian
    capturer.observe(spec, "m", "1", "one", swapped, _logits([UNSURE]))  # a batch of one
    capturer.observe(spec, "m", "1", "two", _feeds(2), _logits([UNSURE, UNSURE]))
    assert len(kept) == 3
    for k in kept:
        line = k.encoded()
        assert orjson.loads(line) == k.record() and len(line) == k.size
        assert orjson.loads(line)["at"].endswith("+00:00")
    (tensor,) = kept[0].record()["inputs"]
    assert tensor["datatype"] == "<f4"  # stored little-endian whatever the request's order
    assert tensor_values(tensor).ravel().tolist() == list(range(3 * 8 * 8))


def test_a_row_of_a_batch_is_copied_and_a_batch_of_one_is_kept_as_it_is() -> None:
    kept: list[Kept] = []
    capturer = Capturer()
    capturer.sinks.append(kept.append)
    spec = CaptureSpec.parse("uncertain:0.9")
    one, two = _feeds(1), _feeds(2)
    capturer.observe(spec, "m", "1", "a", one, _logits([UNSURE]))
    capturer.observe(spec, "m", "1", "b", two, _logits([UNSURE, UNSURE]))
    assert np.shares_memory(kept[0].tensors["inputs"][0][1], one["input"])
    assert not np.shares_memory(kept[1].tensors["inputs"][0][1], two["input"])
    two["input"][:] = -1.0  # the request's batch reused: the kept rows are unchanged
    assert tensor_values(kept[1].record()["inputs"][0]).min() >= 0.0


def test_a_drift_alarm_opens_the_drift_window_of_its_version() -> None:
    capturer = Capturer()
    spec = CaptureSpec.parse("drift:60")
    assert _run(capturer, spec, _logits([CONFIDENT]), "before") == 0
    alarm = MonitorEvent(EventType.DRIFT, "m", "1", "input", 9.0, 1.0, 5, (), time.time())
    capturer.monitor_event(alarm)
    assert _run(capturer, spec, _logits([CONFIDENT]), "after") == 1
    other = MonitorEvent(EventType.DRIFT, "m", "2", "input", 9.0, 1.0, 5, (), time.time())
    capturer.monitor_event(other)  # another version's alarm opens nothing for version 3
    old = MonitorEvent(EventType.DRIFT, "m", "3", "input", 9.0, 1.0, 5, (), time.time() - 61)
    capturer.monitor_event(old)
    three = capturer.observe(spec, "m", "3", "later", _feeds(1), _logits([CONFIDENT]))
    assert three == 0  # its only alarm's window closed


def test_a_row_is_judged_by_the_last_alarm_before_its_answer_whatever_the_order() -> None:
    """An older alarm that arrives after a newer one does not close the newer one's window."""
    capturer = Capturer()
    spec = CaptureSpec.parse("drift:60")
    now = time.time()
    for at in (now - 1.0, now - 61.0):  # the newer alarm first, then an older one
        capturer.monitor_event(
            MonitorEvent(EventType.DRIFT, "m", "1", "input", 9.0, 1.0, 5, (), at)
        )
    assert _run(capturer, spec, _logits([CONFIDENT]), "r") == 1
    assert capturer.status()["m:1"]["kept_by_reason"] == {"drift": 1}


# -- the random share is seeded, counted and unbiased --------------------------------------------


def test_random_share_over_many_seeds_is_within_binomial_bounds() -> None:
    share, rows, seeds = 0.05, 1000, 50
    counts = []
    for seed in range(seeds):
        capturer = Capturer()
        spec = CaptureSpec.parse(f"random:{share}", seed=seed)
        for i in range(rows // 250):
            _run(capturer, spec, _logits([CONFIDENT] * 250), f"s{seed}-{i}")
        doc = capturer.status()["m:1"]
        assert doc["kept_by_reason"].get("random", 0) == doc["kept"]  # counted by reason
        counts.append(doc["kept"])
    # Each seed: Binomial(1000, 0.05), sd 6.9; 5 sd either side fails ~1 in 1.7 million.
    sd = math.sqrt(rows * share * (1 - share))
    assert all(abs(c - rows * share) < 5 * sd for c in counts), counts
    # The mean over 50 seeds: sd 0.97; 5 sd either side.
    assert abs(np.mean(counts) - rows * share) < 5 * sd / math.sqrt(seeds)
    assert len(set(counts)) > 5  # the seeds differ


def test_the_same_seed_keeps_the_same_rows() -> None:
    def kept(seed: int) -> list[str]:
        records: list[dict[str, Any]] = []
        capturer = Capturer()
        capturer.sinks.append(lambda k: records.append(k.record()))
        _run(capturer, CaptureSpec.parse("random:0.1", seed=seed), _logits([CONFIDENT] * 200), "r")
        return [r["sample_id"] for r in records]

    assert kept(7) == kept(7) and kept(7) != kept(8)


# -- through the server: requests in, a JSON Lines file out, a stored data set version --------


def _profile(model: Path) -> bytes:
    x = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs = np.asarray(session.run(None, {"input": x})[0])
    return DriftMonitor.fit(x, probs, probs.argmax(axis=1)).profile.to_bytes()


def test_uncertain_requests_are_captured_labelled_and_stored_as_a_data_set(
    tmp_path: Path,
) -> None:
    model = make_linear_onnx(tmp_path / "lin.onnx", features=4, seed=3)
    (tmp_path / "lin.profile.npz").write_bytes(_profile(model))  # labels join watched answers
    out = tmp_path / "captures.jsonl"
    config = ServerConfig(capture=CaptureSpec.parse("uncertain:0.6"), capture_out=out)
    rng = np.random.default_rng(0)
    scale = np.linspace(0.0, 3.0, 60, dtype=np.float32)[:, None]
    rows = rng.standard_normal((60, 4)).astype(np.float32) * scale
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    top1 = np.asarray(session.run(None, {"input": rows})[0]).max(axis=1)
    expected = {f"q{i}" for i in np.flatnonzero(top1 < 0.6)}
    assert 2 < len(expected) < 60
    labelled = sorted(expected)[:2]
    with serving([model], config) as h:
        for i, row in enumerate(rows):
            body = {"features": row.tolist(), "request_id": f"q{i}"}
            assert h.post("/predict", json=body).status_code == 200
        for rid in labelled:
            answer = h.post("/predict/labels", json={"request_id": rid, "label": 2})
            assert answer.status_code == 200, answer.text
        status = h.server.service.capture.status()["lin:1"]
        h.call(h.server.service.drain)  # writes what is buffered
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    samples = [r for r in lines if r["type"] == "sample"]
    assert {r["request_id"] for r in samples} == expected
    assert sorted(r["request_id"] for r in lines if r["type"] == "label") == labelled
    assert status["kept"] == len(expected) and status["seen"] == 60
    assert all(r["model"] == "lin" and r["model_version"] == "1" for r in samples)

    from typer.testing import CliRunner

    from edgeloop.cli.app import app

    args = ["data", "capture", "lin", "--from", str(out), "--out-name", "lin-captures",
            "--home", str(tmp_path / "home"), "--format", "json"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    made = json.loads(done.stdout)
    assert (made["ref"], made["samples"], made["labelled"]) == ("lin-captures:1", len(expected), 2)
    assert made["provenance"]["reasons"] == ["uncertain"]
    assert made["provenance"]["node_ids"] == ["local"]
    again = CliRunner().invoke(app, args)  # the same samples again: refused, named
    assert isinstance(again.exception, ConflictError)
    assert "lin-captures:1 already holds" in again.exception.message


def test_rows_answered_after_a_drift_alarm_are_captured_for_drift(tmp_path: Path) -> None:
    """The version's monitor (a real profile) raises a drift alarm on a shifted stream; from
    then on its rows are kept for ``drift``, none before it."""
    model = make_linear_onnx(tmp_path / "lin.onnx", features=4, seed=3)
    (tmp_path / "lin.profile.npz").write_bytes(_profile(model))
    records: list[dict[str, Any]] = []
    config = ServerConfig(capture=CaptureSpec.parse("drift:300"))
    shifted = np.random.default_rng(1).standard_normal((200, 4))
    shifted[:, 2] += 3.0
    alarms: list[MonitorEvent] = []
    with serving([model], config) as h:
        h.server.service.capture.sinks.append(lambda k: records.append(k.record()))
        h.catalog.monitor_sinks.append(alarms.append)
        for i, row in enumerate(shifted):
            body = {"features": row.tolist(), "request_id": f"d{i}"}
            assert h.post("/predict", json=body).status_code == 200
    drift = [a for a in alarms if a.type is EventType.DRIFT]
    assert drift and records and all(r["reasons"] == ["drift"] for r in records)
    first = int(records[0]["request_id"][1:])
    assert first > drift[0].index  # the alarm's own row was answered before the alarm
    assert [r["request_id"] for r in records] == [f"d{i}" for i in range(first, 200)]
