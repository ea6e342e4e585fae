"""The dynamic batcher with real ONNX models: batching, isolation of a bad request, overload,
stop. No assertion depends on how long anything took; waits only give requests time to meet."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, ConflictError, DataError, OverloadError
from edgeloop.runtime import (
    BatchResult,
    DynamicBatcher,
    LoadedModel,
    ModelKey,
    ModelPool,
    SessionConfig,
    load_model,
)
from edgeloop.runtime.engine import Feeds, Outputs

ONE = SessionConfig(intra_op_threads=1)


def _run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())  # type: ignore[arg-type]


def _x(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def linear(linear_path: Path) -> LoadedModel:
    return load_model(linear_path, ONE)


@pytest.fixture(scope="module")
def lookup(lookup_path: Path) -> LoadedModel:
    return load_model(lookup_path, ONE)


class Gate:
    """A runner that blocks until opened, to hold a worker busy (a real function, no mock)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.started = threading.Event()
        self.opened = threading.Event()

    def __call__(self, feeds: Feeds) -> Outputs:
        self.started.set()
        if not self.opened.wait(timeout=30):
            raise TimeoutError("gate was never opened")
        return self.model.run(feeds)

    async def wait_started(self) -> None:
        while not self.started.is_set():
            await asyncio.sleep(0.001)


def test_concurrent_requests_share_batches_and_get_their_own_answers(linear: LoadedModel) -> None:
    seen: list[int] = []

    async def main() -> tuple[list[BatchResult], DynamicBatcher]:
        batcher = DynamicBatcher(
            linear, max_batch=8, max_delay_ms=20, max_queue=32, on_batch=seen.append
        )
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit({"input": _x(1, i)}) for i in range(16)))
        await batcher.stop()
        return list(results), batcher

    results, batcher = _run(main)
    stats = batcher.stats()
    assert stats.requests == 16 and stats.samples == 16
    assert stats.batches < 16
    assert sum(size * n for size, n in stats.batch_sizes.items()) == 16
    assert sorted(seen) == sorted(s for s, n in stats.batch_sizes.items() for _ in range(n))
    assert max(r.batch_size for r in results) > 1
    for i, result in enumerate(results):
        alone = linear.run({"input": _x(1, i)})["output"]
        np.testing.assert_allclose(result.outputs["output"], alone, atol=1e-6)
        assert result.queue_ms >= 0 and result.inference_ms >= 0
    assert (stats.failed, stats.rejected, stats.queue_depth, stats.in_flight) == (0, 0, 0, 0)


def test_requests_with_several_samples_are_split_back(linear: LoadedModel) -> None:
    sizes = [3, 1, 2, 2]

    async def main() -> list[BatchResult]:
        batcher = DynamicBatcher(linear, max_batch=8, max_delay_ms=20, max_queue=8)
        await batcher.start()
        out = await asyncio.gather(
            *(batcher.submit({"input": _x(n, i)}) for i, n in enumerate(sizes))
        )
        await batcher.stop()
        return list(out)

    for i, (n, result) in enumerate(zip(sizes, _run(main), strict=True)):
        assert result.outputs["output"].shape == (n, 3)
        np.testing.assert_allclose(
            result.outputs["output"], linear.run({"input": _x(n, i)})["output"], atol=1e-6
        )


def test_a_failing_batch_fails_only_the_bad_request(lookup: LoadedModel) -> None:
    """Id 99 is out of the table: onnxruntime fails the whole batch; only its owner must see it."""
    ids = [np.array([[i % 10, (i + 3) % 10]], np.int64) for i in range(8)]
    ids[5] = np.array([[1, 99]], np.int64)

    async def main() -> tuple[list[Any], DynamicBatcher]:
        batcher = DynamicBatcher(lookup, max_batch=8, max_delay_ms=50, max_queue=8)
        await batcher.start()
        out = await asyncio.gather(
            *(batcher.submit({"ids": x}) for x in ids), return_exceptions=True
        )
        await batcher.stop()
        return list(out), batcher

    results, batcher = _run(main)
    assert isinstance(results[5], DataError)
    assert "idx=99" in str(results[5])
    for i, result in enumerate(results):
        if i != 5:
            assert isinstance(result, BatchResult), result
            np.testing.assert_array_equal(
                result.outputs["output"], lookup.run({"ids": ids[i]})["output"]
            )
    stats = batcher.stats()
    assert stats.failed == 1
    assert stats.retried_batches >= 1


def test_a_request_of_the_wrong_shape_fails_alone(linear: LoadedModel) -> None:
    feeds = [{"input": _x(1, i)} for i in range(6)]
    feeds[2] = {"input": np.zeros((1, 5), np.float32)}

    async def main() -> list[Any]:
        batcher = DynamicBatcher(linear, max_batch=8, max_delay_ms=20, max_queue=8)
        await batcher.start()
        out = await asyncio.gather(*(batcher.submit(f) for f in feeds), return_exceptions=True)
        await batcher.stop()
        return list(out)

    results = _run(main)
    assert isinstance(results[2], DataError)
    assert "'input'" in str(results[2]) and "1x5" in str(results[2])
    assert all(isinstance(r, BatchResult) for i, r in enumerate(results) if i != 2)


def test_outputs_without_a_batch_axis_are_answered_request_by_request() -> None:
    def count_rows(feeds: Feeds) -> Outputs:  # a summary output: it cannot be split by rows
        return {"rows": np.array(feeds["x"].shape[0])}

    async def main() -> tuple[list[BatchResult], DynamicBatcher]:
        batcher = DynamicBatcher(count_rows, max_batch=8, max_delay_ms=20, max_queue=8)
        await batcher.start()
        out = await asyncio.gather(*(batcher.submit({"x": np.zeros((n, 2))}) for n in (1, 2, 3)))
        await batcher.stop()
        return list(out), batcher

    results, batcher = _run(main)
    assert [int(r.outputs["rows"]) for r in results] == [1, 2, 3]
    assert [r.batch_size for r in results] == [1, 2, 3]
    assert batcher.stats().retried_batches == 1


def test_pass_through_mode_answers_each_request(linear: LoadedModel) -> None:
    async def main() -> tuple[list[BatchResult], DynamicBatcher]:
        batcher = DynamicBatcher(linear, max_batch=1, max_delay_ms=0, max_queue=16)
        await batcher.start()
        out = await asyncio.gather(*(batcher.submit({"input": _x(2, i)}) for i in range(6)))
        await batcher.stop()
        return list(out), batcher

    results, batcher = _run(main)
    for i, result in enumerate(results):
        assert result.batch_size == 2
        np.testing.assert_allclose(
            result.outputs["output"], linear.run({"input": _x(2, i)})["output"], atol=1e-6
        )
    assert batcher.stats().batches == 6
    assert batcher.stats().batch_sizes == {2: 6}


@pytest.mark.parametrize("max_batch", [1, 4])
def test_a_full_queue_refuses_at_once(linear: LoadedModel, max_batch: int) -> None:
    gate = Gate(linear)

    async def main() -> tuple[list[Any], DynamicBatcher]:
        batcher = DynamicBatcher(gate, max_batch=max_batch, max_delay_ms=0, max_queue=4)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit({"input": _x(max_batch, 0)}))
        await gate.wait_started()  # the only worker is now busy
        waiting = [asyncio.ensure_future(batcher.submit({"input": _x(1, i)})) for i in range(4)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadError, match=r"4 requests waiting.*max_queue\) is 4") as err:
            await batcher.submit({"input": _x(1, 9)})
        assert err.value.http_status == 429
        assert batcher.stats().queue_depth == 4
        gate.opened.set()
        done = await asyncio.gather(first, *waiting)
        await batcher.stop()
        return list(done), batcher

    done, batcher = _run(main)
    assert all(isinstance(r, BatchResult) for r in done)
    assert batcher.stats().rejected == 1
    assert batcher.stats().requests == 5


def test_stop_without_drain_fails_the_waiting_requests(linear: LoadedModel) -> None:
    gate = Gate(linear)

    async def main() -> list[Any]:
        batcher = DynamicBatcher(gate, max_batch=2, max_delay_ms=0, max_queue=8)
        await batcher.start()
        running = asyncio.ensure_future(batcher.submit({"input": _x(1, 0)}))
        await gate.wait_started()
        queued = [asyncio.ensure_future(batcher.submit({"input": _x(1, i)})) for i in range(3)]
        await asyncio.sleep(0)
        stopping = asyncio.ensure_future(batcher.stop(drain=False))
        await asyncio.sleep(0)
        gate.opened.set()
        await stopping
        with pytest.raises(ConflictError, match="stopping"):
            await batcher.submit({"input": _x(1, 0)})
        return list(await asyncio.gather(running, *queued, return_exceptions=True))

    results = _run(main)
    assert isinstance(results[0], BatchResult)  # already running: it finishes
    for failed in results[1:]:
        assert isinstance(failed, ConflictError)
        assert "stopped before this request ran" in str(failed)


def test_stop_with_drain_answers_everything_admitted(linear: LoadedModel) -> None:
    async def main() -> list[Any]:
        batcher = DynamicBatcher(linear, max_batch=4, max_delay_ms=30, max_queue=16)
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit({"input": _x(1, i)})) for i in range(10)]
        await asyncio.sleep(0)
        await batcher.stop()
        return list(await asyncio.gather(*pending, return_exceptions=True))

    assert all(isinstance(r, BatchResult) for r in _run(main))


def test_pool_runner_feeds_the_batcher(linear_path: Path) -> None:
    pool = ModelPool(memory_budget_mb=256)
    key = ModelKey("linear", "1")
    pool.register(key, linear_path, ONE)

    async def main() -> list[BatchResult]:
        batcher = DynamicBatcher(pool.runner(key), max_batch=4, max_delay_ms=10, max_queue=8)
        await batcher.start()
        out = await asyncio.gather(*(batcher.submit({"input": _x(1, i)}) for i in range(4)))
        await batcher.stop()
        return list(out)

    assert len(_run(main)) == 4
    assert pool.model_stats(key).loads == 1 and pool.model_stats(key).refs == 0


def test_not_started_refuses(linear: LoadedModel) -> None:
    batcher = DynamicBatcher(linear, max_batch=2, max_delay_ms=1, max_queue=2)

    async def main() -> None:
        with pytest.raises(ConflictError, match="not started"):
            await batcher.submit({"input": _x(1, 0)})
        await batcher.start()
        with pytest.raises(ConflictError, match="already started"):
            await batcher.start()
        await batcher.stop()
        await batcher.stop()  # twice is fine

    _run(main)


@pytest.mark.parametrize(
    ("feeds", "bad"),
    [
        ({}, "no input tensors"),
        ({"input": np.float32(1.0)}, "'input' is not an array"),
        ({"input": [1.0, 2.0]}, "'input' is not an array"),
        ({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, "'b' has 3 samples.*first input has 2"),
        ({"input": np.zeros((0, 4), np.float32)}, "0 samples"),
    ],
)
def test_malformed_requests_are_data_errors(linear: LoadedModel, feeds: Any, bad: str) -> None:
    async def main() -> DynamicBatcher:
        batcher = DynamicBatcher(linear, max_batch=2, max_delay_ms=1, max_queue=2)
        await batcher.start()
        with pytest.raises(DataError, match=bad):
            await batcher.submit(feeds)
        await batcher.stop()
        return batcher

    assert _run(main).stats().requests == 0


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"max_batch": 0}, "max_batch=0"),
        ({"max_queue": 0}, "max_queue=0"),
        ({"workers": 0}, "workers=0"),
        ({"max_delay_ms": -1.0}, "max_delay_ms=-1.0"),
        ({"max_delay_ms": float("nan")}, "max_delay_ms=nan"),
        ({"max_batch": 8, "max_queue": 4}, "max_queue=4 is below max_batch=8"),
    ],
)
def test_bad_limits_name_the_value(linear: LoadedModel, kwargs: dict[str, Any], bad: str) -> None:
    limits: dict[str, Any] = {"max_batch": 2, "max_delay_ms": 1.0, "max_queue": 4} | kwargs
    with pytest.raises(ConfigError, match=bad):
        DynamicBatcher(linear, **limits)
