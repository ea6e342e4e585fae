"""The model pool: measured sizes, the memory budget, LRU eviction, reference counts.

The wide models hold 20 MiB of random float32 weights each, so the RSS change of loading one
is far above allocator noise. A warm-up load pays onnxruntime's one-time set-up first, so the
sizes measured in a test belong to its models.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.runtime.runtime_models import WIDTH, make_wide_onnx

from edgeloop.core.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    OverloadError,
    UntrustedArtifactError,
)
from edgeloop.runtime import (
    ModelKey,
    ModelPool,
    SessionConfig,
    SizeBasis,
    load_model,
)
from edgeloop.runtime.residency import Resident, plan_evictions

WEIGHTS_MB = 20.0
ONE = SessionConfig(intra_op_threads=1)
A, B, C, D = (ModelKey("wide", v) for v in ("a", "b", "c", "d"))


@pytest.fixture(scope="module")
def wide(models_dir: Path) -> dict[ModelKey, Path]:
    paths = {
        k: make_wide_onnx(models_dir / f"wide-{k.version}.onnx", WEIGHTS_MB, i)
        for i, k in enumerate((A, B, C, D))
    }
    load_model(paths[A], ONE).close()  # pay onnxruntime's one-time set-up outside the tests
    return paths


def _pool(wide: dict[ModelKey, Path], budget: float | None) -> ModelPool:
    pool = ModelPool(memory_budget_mb=budget)
    for key, path in wide.items():
        pool.register(key, path, ONE)
    return pool


def _x() -> dict[str, np.ndarray]:
    return {"input": np.ones((1, WIDTH), np.float32)}


def test_size_is_the_measured_rss_change_of_the_load(wide: dict[ModelKey, Path]) -> None:
    pool = _pool(wide, None)
    before = pool.model_stats(A)
    assert before.size_basis is SizeBasis.ESTIMATED
    assert before.size_source == "estimate: file size x 1.5"
    assert before.size_mb == pytest.approx(wide[A].stat().st_size * 1.5 / 2**20)
    after = pool.prefetch(A)
    assert after.loaded and after.loads == 1 and after.refs == 0
    assert after.size_basis is SizeBasis.MEASURED
    assert "rss delta" in after.size_source
    # The weights are resident (random data, every page touched); not much more than them.
    assert WEIGHTS_MB * 0.9 <= after.size_mb <= WEIGHTS_MB * 2.5
    assert after.load_ms is not None and after.load_ms > 0
    assert after.provider == "CPUExecutionProvider"
    pool.close()


def test_least_recently_used_idle_model_is_evicted(wide: dict[ModelKey, Path]) -> None:
    # 62 MB holds two measured models (~20 MB each) plus one estimate (30 MB), not three.
    pool = _pool(wide, 62.0)
    pool.prefetch(A)
    pool.prefetch(B)
    with pool.acquire(A) as model:  # A is now the most recently used
        model.run(_x())
    pool.prefetch(C)
    assert pool.loaded() == [A, C]
    stats = pool.stats()
    by_key = {m.key: m for m in stats.models}
    assert by_key[B].evictions == 1 and by_key[B].unloads == 1 and not by_key[B].loaded
    assert (stats.loads, stats.evictions, stats.unloads) == (3, 1, 1)
    assert stats.resident_mb == pytest.approx(by_key[A].size_mb + by_key[C].size_mb)
    pool.close()


def test_a_held_model_is_never_evicted(wide: dict[ModelKey, Path]) -> None:
    pool = _pool(wide, 62.0)
    with pool.acquire(A), pool.acquire(B):
        assert pool.model_stats(A).refs == 1
        with pytest.raises(OverloadError) as err:
            pool.prefetch(C)
        message = str(err.value)
        assert "wide:c" in message and "62.0 MB" in message
        assert "wide:a" in message and "wide:b" in message  # what is held
        assert err.value.http_status == 429
        assert pool.loaded() == [A, B]
    assert pool.model_stats(A).refs == 0
    pool.prefetch(C)  # released (B first, then A): now B, the least recently used, can go
    assert pool.loaded() == [A, C]
    assert (pool.stats().refused, pool.stats().load_failures) == (1, 0)
    pool.close()


def test_reference_counts_follow_nested_holders(wide: dict[ModelKey, Path]) -> None:
    pool = _pool(wide, None)
    with pool.acquire(A) as first, pool.acquire(A) as second:
        assert first is second
        assert pool.model_stats(A).refs == 2
        with pytest.raises(ConflictError, match=r"wide:a is held by 2"):
            pool.unload(A)
    assert pool.model_stats(A).refs == 0
    assert pool.unload(A) is True
    assert pool.unload(A) is False
    assert pool.model_stats(A).unloads == 1
    with pool.acquire(A) as model:  # loads again on demand
        assert model.run(_x())["output"].shape[0] == 1
    assert pool.model_stats(A).loads == 2


def test_concurrent_acquires_load_once(wide: dict[ModelKey, Path]) -> None:
    pool = _pool(wide, None)
    seen: list[int] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        with pool.acquire(D) as model:
            seen.append(id(model))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and len(set(seen)) == 1
    assert pool.model_stats(D).loads == 1
    pool.close()


def test_a_model_larger_than_the_whole_budget(wide: dict[ModelKey, Path]) -> None:
    pool = _pool(wide, 10.0)
    with pytest.raises(OverloadError, match=r"wide:a needs 30\.\d MB \(estimate.*10\.0 MB") as err:
        pool.prefetch(A)
    assert "alone is larger than the budget" in (err.value.hint or "")
    assert (pool.stats().refused, pool.stats().load_failures) == (1, 0)
    assert pool.loaded() == []


def test_runner_holds_the_model_only_while_running(wide: dict[ModelKey, Path]) -> None:
    pool = _pool(wide, None)
    run = pool.runner(A)
    assert run(_x())["output"].shape[0] == 1
    assert pool.model_stats(A).refs == 0
    assert pool.loaded() == [A]
    pool.close()


def test_register_and_lookup_errors(wide: dict[ModelKey, Path], tmp_path: Path) -> None:
    pool = _pool(wide, None)
    pool.register(A, wide[A], ONE)  # the same again is fine
    with pytest.raises(ConflictError, match=r"wide:a is already registered"):
        pool.register(A, wide[B], ONE)
    with pytest.raises(NotFoundError, match=r"nope\.onnx"):
        pool.register(ModelKey("x", "1"), tmp_path / "nope.onnx")
    with pytest.raises(NotFoundError, match=r"ghost:1 is not in the pool; registered: wide:a"):
        pool.prefetch(ModelKey("ghost", "1"))
    pool.remove(A)
    assert pool.keys() == [B, C, D]


def test_a_load_that_fails_is_counted_and_can_be_retried(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    pool = ModelPool(memory_budget_mb=100)
    key = ModelKey("broken", "1")
    pool.register(key, path)
    for _ in range(2):
        with pytest.raises(UntrustedArtifactError, match=r"broken\.onnx"):
            pool.prefetch(key)
    stats = pool.stats()
    assert (stats.load_failures, stats.refused, stats.loads) == (2, 0, 0)
    assert pool.loaded() == []


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: ModelPool(memory_budget_mb=0), "memory budget 0"),
        (lambda: ModelPool(memory_budget_mb=-5.0), "memory budget -5.0"),
        (lambda: ModelPool(estimate_factor=0), "estimate_factor 0"),
        (lambda: ModelKey("bad name", "1"), "'bad name'"),
        (lambda: ModelKey("m", ""), "version ''"),
    ],
)
def test_bad_pool_settings_name_the_value(make: object, bad: str) -> None:
    with pytest.raises(ConfigError, match=bad):
        make()  # type: ignore[operator]


residents = st.lists(st.tuples(st.floats(0, 100), st.integers(0, 3)), min_size=0, max_size=8).map(
    lambda rows: [
        Resident(ModelKey("m", str(i)), size, last_used=i, refs=refs)
        for i, (size, refs) in enumerate(rows)
    ]
)


@settings(deadline=None)  # no per-example time limit: a loaded CI machine stalls at will
@given(residents, st.floats(0, 200), st.floats(1, 400))
def test_plan_evicts_only_idle_models_oldest_first(
    loaded: list[Resident], need: float, budget: float
) -> None:
    plan = plan_evictions(loaded, need, budget)
    idle = [r for r in loaded if r.refs == 0]
    freeable = sum(r.size_mb for r in idle)
    used = sum(r.size_mb for r in loaded)
    eps = 1e-9 * (used + need + budget)  # sums taken in another order round differently
    if plan is None:
        assert used - freeable + need > budget - eps
        return
    chosen = {r.key: r for r in loaded if r.key in plan}
    assert all(r.refs == 0 for r in chosen.values())
    assert plan == [r.key for r in idle[: len(plan)]]  # a prefix of the idle ones by age
    assert used - sum(r.size_mb for r in chosen.values()) + need <= budget + eps
