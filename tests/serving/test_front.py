"""The front door (ASGI middleware): a request older than the budget is refused unread."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
import pytest

from edgeloop.serving.front import ARRIVED, FrontDoor, is_inference


class Downstream:
    """The app behind the door: answers 200 and records what reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(door: FrontDoor, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the door must not read the body")

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(door(scope, receive, send))
    return sent


def _scope(path: str, age_s: float | None, method: str = "POST") -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path}
    if age_s is not None:
        scope[ARRIVED] = time.perf_counter() - age_s
    return scope


def test_an_old_inference_request_is_refused_with_429_retry_after_and_the_numbers() -> None:
    app, refused = Downstream(), []
    door = FrontDoor(app, 0.05, lambda path, waited: refused.append((path, waited)))
    sent = _call(door, _scope("/v2/models/cnn/infer", age_s=0.2))
    assert app.seen == [] and door.refused == 1
    assert refused[0][0] == "/v2/models/cnn/infer" and refused[0][1] >= 0.2
    start, body = sent
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    assert int(headers[b"content-length"]) == len(body["body"])
    doc = orjson.loads(body["body"])
    assert doc["type"] == "QueueDelayError"
    # The wait it reports is the one it measured (0.2 s and whatever this machine added since).
    waited_ms = int(re.search(r"waited (\d+) ms", doc["error"])[1])  # type: ignore[index]
    assert waited_ms == round(refused[0][1] * 1000) and waited_ms >= 200
    assert "--max-queue-delay-ms 50" in doc["error"]


@pytest.mark.parametrize(
    ("path", "method", "age_s", "budget_s"),
    [
        # Young enough: 10 ms old against a 30 s budget (a loaded machine may take tens of ms
        # between stamping the request and the door's look at it).
        ("/v2/models/cnn/infer", "POST", 0.01, 30.0),
        ("/predict", "POST", None, 0.05),  # no stamp: stamped now, age ~0
        ("/metrics", "GET", 5.0, 0.05),  # not an inference request: never refused here
        ("/v2/repository/models/cnn/load", "POST", 5.0, 0.05),
        ("/predict/cnn", "POST", 5.0, 0.0),  # budget 0: the check is off
    ],
)
def test_what_the_door_lets_through(
    path: str, method: str, age_s: float | None, budget_s: float
) -> None:
    app = Downstream()
    door = FrontDoor(app, budget_s, None)
    scope = _scope(path, age_s, method)
    sent = _call(door, scope)
    assert app.seen == [path] and sent[0]["status"] == 200 and door.refused == 0
    assert ARRIVED in scope or not is_inference(scope)


def test_admitted_inference_paths_are_matched_to_their_handler_and_others_fall_through() -> None:
    from edgeloop.serving.front import inference_route

    async def infer(scope: Any, receive: Any, send: Any) -> None: ...

    async def predict(scope: Any, receive: Any, send: Any) -> None: ...

    route = inference_route(infer, predict)
    assert route(["", "v2", "models", "cnn", "infer"]) == (infer, {"model": "cnn"})
    assert route(["", "predict"]) == (predict, {})
    found = {
        path: (None if (hit := route(path.split("/"))) is None else hit[1])
        for path in (
            "/v2/models/cnn/infer",
            "/v2/models/cnn/versions/2/infer",
            "/predict",
            "/predict/cnn",
            "/v2/models//infer",
            "/v2/models/cnn/versions//infer",
            "/v2/other/cnn/infer",
            "/v2/other/cnn/versions/2/infer",
            "/v2/models/cnn/other/2/infer",
            "/predict/cnn/extra",
        )
    }
    assert found == {
        "/v2/models/cnn/infer": {"model": "cnn"},
        "/v2/models/cnn/versions/2/infer": {"model": "cnn", "version": "2"},
        "/predict": {},
        "/predict/cnn": {"model": "cnn"},
        "/v2/models//infer": None,  # the framework's router answers these (404)
        "/v2/models/cnn/versions//infer": None,
        "/v2/other/cnn/infer": None,
        "/v2/other/cnn/versions/2/infer": None,
        "/v2/models/cnn/other/2/infer": None,
        "/predict/cnn/extra": None,
    }
