"""Issue 17 item 2: a malformed shape is a 400, a bug is a JSON 500, and every answer (5xx too)
is in ``edgeloop_requests_total``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import orjson
import pytest
from tests.serving.harness import Harness, serving

from edgeloop.serving import oip

ISSUE_BODY = {
    "inputs": [{"name": "input", "shape": [9223372036854775807, 0], "datatype": "FP32", "data": []}]
}


def _count(s: Harness, code: int, endpoint: str = "infer") -> float:
    pattern = re.compile(
        rf'^edgeloop_requests_total\{{code="{code}",endpoint="{endpoint}",[^}}]*\}} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(s.metrics()))


def _binary_issue_body() -> tuple[bytes, dict[str, str]]:
    doc = {"inputs": [{"name": "input", "shape": [9223372036854775807, 0], "datatype": "FP32",
                       "parameters": {"binary_data_size": 0}}]}  # fmt: skip
    header = orjson.dumps(doc)
    return header, {"Inference-Header-Content-Length": str(len(header))}


def test_the_issue_shape_is_a_bad_request_naming_the_shape(linear: Path) -> None:
    with serving([linear]) as s:
        answers = [s.post("/v2/models/linear/infer", json=ISSUE_BODY)]
        body, headers = _binary_issue_body()
        answers.append(s.post("/v2/models/linear/infer", content=body, headers=headers))
        for r in answers:
            assert r.status_code == 400, r.text
            assert "input 'input' has shape [9223372036854775807, 0]" in r.json()["error"]
        assert _count(s, 400) == 2
        assert s.infer("linear", _row()).status_code == 200  # the model still answers


def test_a_bug_answers_500_in_json_and_is_counted(
    linear: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: bytes, header: str | None) -> oip.InferRequest:
        raise ValueError("a bug the checks missed")

    with serving([linear]) as s:
        monkeypatch.setattr(oip, "decode_infer", broken)
        r = s.post("/v2/models/linear/infer", json=ISSUE_BODY)
        assert r.status_code == 500
        assert r.json()["type"] == "InternalError" and "ValueError" in r.json()["error"]
        assert "Traceback" not in r.text and "a bug the checks missed" not in r.text
        assert _count(s, 500) == 1
        assert re.search(r'edgeloop_errors_total\{error="InternalError"[^}]*\} 1\.0', s.metrics())


def test_503_answers_are_counted(linear: Path) -> None:
    with serving([linear]) as s:
        assert s.post("/v2/repository/models/linear/unload").status_code == 200
        r = s.infer("linear", _row())
        assert r.status_code == 503
        r = s.post("/predict", json={"features": [0.0, 0.0, 0.0, 0.0]})
        assert r.status_code == 503
        assert _count(s, 503) == 1 and _count(s, 503, "predict") == 1


def _row() -> np.ndarray:
    return np.zeros((1, 4), dtype=np.float32)
