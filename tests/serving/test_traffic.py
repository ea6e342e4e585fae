"""Traffic behaviour: A/B split and stickiness, shadow copies, 429, 504, hot swap under load,
adaptive variants. Real models, concurrent requests from threads, no timed assertions."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.serving.harness import Harness, binary_request, infer_url, serving
from tests.serving.models import add_version, make_repository
from tests.tiny_models import make_linear_onnx

from edgeloop.runtime import LoadedModel, ModelKey, ModelPool
from edgeloop.serving import Routing, ServerConfig, Split

FEATURES = [0.5, -1.0, 0.25, 2.0]


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _wait_until(condition: object, what: str, limit_s: float = 30.0) -> None:
    """Poll ``condition`` (a callable); fail naming ``what`` if it never holds."""
    deadline = time.monotonic() + limit_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.002)


def test_ab_split_follows_the_weights_and_keys_are_sticky(repo: Path) -> None:
    routing = {"clf": Routing(Split((("1", 80.0), ("2", 20.0))))}
    with serving([repo], ServerConfig(seed=11, routing=routing)) as s:
        versions = Counter(
            s.post("/predict", json={"features": FEATURES}).json()["model_version"]
            for _ in range(500)
        )
        sticky = {}
        for i in range(40):
            answers = {
                s.post(
                    "/predict", json={"features": FEATURES}, headers={"X-Request-Key": f"u{i}"}
                ).json()["model_version"]
                for _ in range(3)
            }
            assert len(answers) == 1, f"key u{i} moved between versions {answers}"
            sticky[f"u{i}"] = answers.pop()
        text = s.metrics()
    # Binomial(500, 0.2): sd ~ 9 requests; +-45 is 5 sd.
    assert versions["1"] + versions["2"] == 500 and abs(versions["2"] - 100) <= 45
    assert set(sticky.values()) == {"1", "2"}
    per_arm = {v: _metric(text, "edgeloop_requests_total", version=v, code="200") for v in "12"}
    assert per_arm["1"] + per_arm["2"] == 620
    assert per_arm["2"] == versions["2"] + sum(1 for v in sticky.values() if v == "2") * 3


def test_shadow_version_gets_a_copy_of_each_request_and_answers_nobody(repo: Path) -> None:
    routing = {"clf": Routing(Split((("1", 1.0),)), shadow="2")}
    config = ServerConfig(routing=routing, shadow_queue=1000)
    with serving([repo], config) as s:
        answers = [s.post("/predict", json={"features": FEATURES}) for _ in range(30)]
        s.call(s.server.service.drain)
        text = s.metrics()
    assert {a.json()["model_version"] for a in answers} == {"1"}
    # Samples each version's engine ran (batched or inline), as the runtime counted them.
    assert _metric(text, "edgeloop_batch_size_sum", model="clf", version="2") == 30
    assert _metric(text, "edgeloop_batch_size_sum", model="clf", version="1") == 30
    assert _metric(text, "edgeloop_shadow_total", outcome="answered") == 30
    agree = _metric(text, "edgeloop_shadow_agreement_total")
    assert agree == 30  # agree + disagree: every copy was compared with the primary's answer
    assert _metric(text, "edgeloop_requests_total", role="shadow", version="2") == 30


class HeldPool(ModelPool):
    """A real pool whose runs, once :meth:`hold` is called, wait in the worker thread until
    :attr:`opened` is set: a request stays in flight for as long as the test needs."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = False
        self.started = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.holding = True

    @contextlib.contextmanager
    def acquire(self, key: ModelKey) -> Iterator[LoadedModel]:
        if self.holding:
            self.started.set()
            if not self.opened.wait(timeout=60):
                raise TimeoutError("the test never let the held run go")
        with super().acquire(key) as model:
            yield model


def test_full_queue_answers_429_with_retry_after(slow: Path) -> None:
    body, headers = binary_request(np.ones((2, 512), np.float32), binary_output=False)
    pool = HeldPool()
    config = ServerConfig(max_queue=1, inline_below_ms=0.0)  # runs in the batcher's thread
    with serving([slow], config, pool=pool) as s, ThreadPoolExecutor(1) as ex:
        gate = s.catalog.models["slow"].gate
        pool.hold()  # the first request runs (in the batcher's thread) until opened
        try:
            first = ex.submit(s.post, infer_url("slow"), content=body, headers=headers)
            if not pool.started.wait(timeout=60):
                pytest.fail("the first request never reached the engine")
            assert gate.in_flight == 1  # admitted, and running: the queue (1) is full
            refused = s.post(infer_url("slow"), content=body, headers=headers)
        finally:
            pool.opened.set()
        assert first.result().status_code == 200
        text = s.metrics()
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert (
        "model 'slow' has 1 requests in flight, its queue limit (--max-queue 1)"
        in (refused.json()["error"])
    )
    assert _metric(text, "edgeloop_rejected_total", model="slow", reason="queue_full") == 1


def test_a_request_past_the_timeout_is_504_and_gives_its_queue_slot_back(
    slow: Path,
) -> None:
    big, headers = binary_request(np.ones((256, 512), np.float32), binary_output=False)
    with serving([slow], ServerConfig(timeout_s=0.001)) as s:
        r = s.post(infer_url("slow"), content=big, headers=headers)
        gate = s.catalog.models["slow"].gate
        _wait_until(lambda: gate.in_flight == 0, "the timed-out request's slot")
        text = s.metrics()
    assert r.status_code == 504
    assert "model 'slow' version 1 did not answer within the 0.001 s timeout" in r.json()["error"]
    assert _metric(text, "edgeloop_rejected_total", reason="timeout") == 1


def _reference(path: Path) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(session.run(None, {"input": np.array([FEATURES], np.float32)})[0].max())


def _hammer(s: Harness, stop: threading.Event, log: list[tuple[int, str, float]]) -> None:
    while not stop.is_set():
        r = s.post("/predict", json={"features": FEATURES})
        doc = r.json()
        log.append((r.status_code, doc.get("model_version", ""), doc.get("confidence", 0.0)))


def test_hot_swap_under_concurrent_load_drops_no_request(tmp_path: Path) -> None:
    model_dir = make_repository(tmp_path, "clf", {1: 1})
    old_conf = _reference(model_dir / "1" / "model.onnx")
    logs: list[list[tuple[int, str, float]]] = [[] for _ in range(6)]
    stop = threading.Event()
    # No queue delay bound: a stall of this shared machine could otherwise refuse a request
    # (429, by design) that the swap had nothing to do with; every refusal here would be a drop.
    with serving([model_dir], ServerConfig(max_queue_delay_ms=0)) as s:
        threads = [threading.Thread(target=_hammer, args=(s, stop, log)) for log in logs]
        for t in threads:
            t.start()
        _wait_until(lambda: all(len(log) >= 5 for log in logs), "traffic on version 1")
        # Swap 1: the same version's file replaced in place (atomic rename), reloaded.
        replacement = make_linear_onnx(tmp_path / "v1b.onnx", seed=7)
        replacement.replace(model_dir / "1" / "model.onnx")
        same = s.post("/v2/repository/models/clf/load").json()
        new_conf = _reference(model_dir / "1" / "model.onnx")
        marks = [len(log) for log in logs]
        _wait_until(
            lambda: all(len(log) >= m + 5 for log, m in zip(logs, marks, strict=True)),
            "traffic on the reloaded version 1",
        )
        # Swap 2: a new version appears and takes the unversioned traffic.
        add_version(model_dir, 2, seed=8)
        newer = s.post("/v2/repository/models/clf/load").json()
        marks = [len(log) for log in logs]
        _wait_until(
            lambda: all(len(log) >= m + 5 for log, m in zip(logs, marks, strict=True)),
            "traffic on version 2",
        )
        stop.set()
        for t in threads:
            t.join()
        text = s.metrics()
    assert same == {"model": "clf", "loaded": ["1"], "retired": ["1"], "unchanged": [],
                    "serving": "1"}  # fmt: skip
    assert newer["loaded"] == ["2"] and newer["unchanged"] == ["1"] and newer["serving"] == "2"
    answers = [entry for log in logs for entry in log]
    assert Counter(code for code, _, _ in answers) == Counter({200: len(answers)})
    for log in logs:  # each client sees old v1, then new v1, then v2: never back
        phases = [0 if abs(c - old_conf) < 1e-6 and v == "1" else 1 if v == "1" else 2
                  for _, v, c in log]  # fmt: skip
        assert phases == sorted(phases) and phases[-1] == 2
        assert all(abs(c - new_conf) < 1e-6 for _, v, c in log if v == "1" and c != old_conf)
    assert _metric(text, "edgeloop_swaps_total", model="clf", outcome="swapped") == 2


def test_a_broken_new_version_is_never_switched_to(tmp_path: Path) -> None:
    model_dir = make_repository(tmp_path, "clf", {1: 1})
    with serving([model_dir]) as s:
        (model_dir / "2").mkdir()
        (model_dir / "2" / "model.onnx").write_bytes(b"not an onnx model")
        r = s.post("/v2/repository/models/clf/load")
        after = s.post("/predict", json={"features": FEATURES})
        text = s.metrics()
    assert r.status_code == 422 and "is not a readable ONNX model" in r.json()["error"]
    assert after.status_code == 200 and after.json()["model_version"] == "1"
    assert _metric(text, "edgeloop_swaps_total", outcome="failed") == 1


def test_unload_then_requests_are_503_with_retry_after(repo: Path) -> None:
    with serving([repo]) as s:
        assert s.post("/v2/repository/models/clf/unload").json()["retired"] == ["1", "2"]
        r = s.post("/predict", json={"features": FEATURES})
        ready = s.get("/v2/health/ready")
        health = s.get("/health")
        assert s.post("/v2/repository/models/clf/load").json()["loaded"] == ["1", "2"]
        back = s.post("/predict", json={"features": FEATURES})
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert "model 'clf' has no version ready yet" in r.json()["error"]
    assert ready.status_code == 400 and health.status_code == 503
    assert back.status_code == 200


def test_variants_switch_to_the_cheaper_one_under_queue_delay(tmp_path: Path) -> None:
    model_dir = make_repository(tmp_path, "clf", {1: 1})
    make_linear_onnx(model_dir / "1" / "model.small.onnx", seed=2)
    # Marks so low that any measured queue delay counts as load: the switch must happen once
    # the first 1-second window closes.
    config = ServerConfig(variant_high_ms=1e-6, variant_low_ms=0.0)
    with serving([model_dir], config) as s:
        meta = s.get("/v2/models/clf").json()["parameters"]
        first = s.post("/predict", json={"features": FEATURES}).json()["variant"]
        time.sleep(1.05)  # let the policy's window close: not a timing assertion
        s.post("/predict", json={"features": FEATURES})
        later = s.post("/predict", json={"features": FEATURES}).json()["variant"]
        text = s.metrics()
    assert meta["variants"] == ["default", "small"]
    assert meta["inline"] == {"default": False, "small": False}  # the policy needs a queue
    assert (first, later) == ("default", "small")
    assert _metric(text, "edgeloop_variant_switches_total", model="clf") == 1
    assert _metric(text, "edgeloop_variant_active", variant="small") == 1


def test_a_fast_unbatched_model_runs_inline_up_to_the_self_test_size(cnn: Path) -> None:
    one, headers = binary_request(np.zeros((1, 3, 32, 32), np.float32))
    four, headers4 = binary_request(np.zeros((4, 3, 32, 32), np.float32))
    # The threshold is set far above any self-test run, so that a loaded machine (a slow
    # self-test) cannot decide this: which requests run inline is what is tested here.
    with serving([cnn], ServerConfig(inline_below_ms=60_000.0)) as s:
        assert s.get("/v2/models/cnn").json()["parameters"]["inline"] == {"default": True}
        version = s.catalog.models["cnn"].versions["1"]
        batcher = version.variants["default"].batcher
        assert s.post(infer_url("cnn"), content=one, headers=headers).status_code == 200
        assert (version.inline_runs["default"], batcher.stats().requests) == (1, 0)
        assert s.post(infer_url("cnn"), content=four, headers=headers4).status_code == 200
        assert (version.inline_runs["default"], batcher.stats().requests) == (1, 1)
    with serving([cnn], ServerConfig(inline_below_ms=0.0)) as s:
        assert s.get("/v2/models/cnn").json()["parameters"]["inline"] == {"default": False}
    with serving([cnn], ServerConfig(max_batch=4, max_delay_ms=1.0)) as s:
        assert s.get("/v2/models/cnn").json()["parameters"]["inline"] == {"default": False}
