"""The telemetry outbox: durability, at-least-once delivery, the cap and its drop policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest

from edgeloop.agent import outbox as outbox_module
from edgeloop.agent.outbox import BINARY, JSON, ItemKind, Outbox
from edgeloop.core.errors import ConfigError, DataError, StoreError


def _open(tmp_path: Path, **caps: int) -> Outbox:
    return Outbox.open(tmp_path / "agent" / "outbox.sqlite", **caps)


def test_put_batch_ack_round_trip_in_order(tmp_path: Path) -> None:
    with _open(tmp_path) as box:
        ids = [box.put("metrics", {"n": i}) for i in range(5)]
        raw = box.put(ItemKind.SAMPLE, b"\x00\x01\xff")
        items = box.batch()
        assert [i.id for i in items] == [*ids, raw]
        assert [uuid.UUID(i).version for i in ids] == [7] * 5
        assert sorted(ids) == ids  # time-ordered ids
        wire = items[0].to_wire()
        assert wire["payload"] == {"n": 0} and wire["content_type"] == JSON
        assert wire["kind"] == "metrics" and wire["created_at"].endswith("Z")
        assert items[-1].to_wire()["payload"] == "AAH/" and items[-1].content_type == BINARY
        assert box.batch() == []  # all leased
        assert box.ack([i.id for i in items[:3]]) == 3
        assert box.ack([items[0].id]) == 0  # a second ack is harmless
        stats = box.stats()
        assert stats.items == {"metrics": 2, "sample": 1} and stats.leased == 3


def test_batch_respects_item_and_byte_limits_but_never_sticks(tmp_path: Path) -> None:
    with _open(tmp_path) as box:
        big = box.put("sample", b"x" * 5000)
        small = [box.put("metrics", {"i": i}) for i in range(4)]
        assert [i.id for i in box.batch(max_bytes=100)] == [big]  # alone, larger than max_bytes
        assert [i.id for i in box.batch(max_items=2)] == small[:2]
        assert [i.id for i in box.batch(max_bytes=10)] == [small[2]]  # 7 bytes each


def test_an_unacked_batch_is_handed_out_again_after_a_restart(tmp_path: Path) -> None:
    box = _open(tmp_path)
    ids = [box.put("event", {"state": s}) for s in ("DOWNLOAD", "VERIFY", "STAGE")]
    assert [i.id for i in box.batch(lease_s=3600)] == ids
    box.ack([ids[0]])
    box.close()  # the shipper died with the batch out
    with _open(tmp_path) as again:
        assert [i.id for i in again.batch()] == ids[1:]


def test_an_unacked_batch_is_handed_out_again_after_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The outbox's clock, moved by hand: a commit's fsync on a busy disk can take longer than a
    # short lease, so real time would hand the batch out again before the second call below.
    now = [time.time()]
    clock = types.SimpleNamespace(time=lambda: now[0], time_ns=time.time_ns)
    monkeypatch.setattr(outbox_module, "time", clock)
    with _open(tmp_path) as box:
        ids = [box.put("metrics", {"i": i}) for i in range(3)]
        assert len(box.batch(lease_s=0.3)) == 3
        now[0] += 0.29
        assert box.batch(lease_s=0.3) == []
        now[0] += 0.02
        assert [i.id for i in box.batch()] == ids
        box.release(ids[:1])
        assert [i.id for i in box.batch()] == ids[:1]


def test_cap_drops_samples_then_metrics_then_events_and_reports_every_drop(tmp_path: Path) -> None:
    with _open(tmp_path, max_items=6) as box:
        events = [box.put("event", {"e": i}) for i in range(2)]
        metrics = [box.put("metrics", {"m": i}) for i in range(2)]
        samples = [box.put("sample", {"s": i}) for i in range(4)]  # 8 > 6: two samples go
        assert box.stats().dropped == {"sample": 2}
        kept = [i.id for i in box.batch(lease_s=3600)]
        report = kept.pop(0)  # the drop report comes first in the next batch
        assert kept == events + metrics + samples[2:]
        box.ack([*kept, report])
        # fill again: 6 samples push the last ones out, then metrics, then events
        more = [box.put("metrics", {"m": i}) for i in range(8)]
        assert box.stats().dropped == {"sample": 2, "metrics": 2}
        last = [box.put("event", {"e": i}) for i in range(7)]
        stats = box.stats()
        assert stats.dropped == {"sample": 2, "metrics": 8, "event": 1}
        assert stats.unreported_dropped == {"metrics": 8, "event": 1}
        batch = box.batch()
        drop_report = batch[0].to_wire()
        assert drop_report["kind"] == "dropped"
        assert drop_report["payload"]["counts"] == {"metrics": 8, "event": 1}
        assert [i.id for i in batch[1:]] == last[1:]
        assert not set(more) & {i.id for i in batch}
        assert box.stats().unreported_dropped == {}


def test_byte_cap_counts_every_drop_exactly(tmp_path: Path) -> None:
    with _open(tmp_path, max_bytes=10_000, max_items=10**6) as box:
        put = [box.put("sample", b"y" * 100) for _ in range(300)]
        stats = box.stats()
        assert stats.bytes <= 10_000 and stats.total_items == 100
        delivered: list[str] = []
        dropped = 0
        while items := box.batch(max_items=37):
            for item in items:
                if item.kind is ItemKind.DROPPED:
                    dropped += item.to_wire()["payload"]["counts"]["sample"]
                else:
                    delivered.append(item.id)
            box.ack([i.id for i in items])
        assert delivered == put[-100:]
        assert dropped == 200 == box.stats().dropped["sample"]


def test_a_leased_item_is_never_dropped_and_the_count_stays_exact(tmp_path: Path) -> None:
    with _open(tmp_path, max_items=3) as box:
        first = box.put("sample", {"s": 0})
        assert [i.id for i in box.batch(lease_s=3600)] == [first]
        rest = [box.put("sample", {"s": i}) for i in range(1, 4)]
        assert box.stats().dropped == {"sample": 1}  # rest[0]: the leased one stayed
        remaining = {i.id for i in box.batch() if i.kind is ItemKind.SAMPLE}
        assert remaining == set(rest[1:])
    with _open(tmp_path / "all", max_items=2) as box:
        out = [box.put("sample", {"s": i}) for i in range(2)]
        box.put("metrics", {"m": 0})  # over the cap: the oldest sample goes
        assert box.stats().dropped == {"sample": 1}
        in_flight = [i.id for i in box.batch(lease_s=3600)]
        assert set(in_flight) >= {out[1]}
        box.put("metrics", {"m": 1})  # every sample is out in a batch: none goes, nor a metric
        stats = box.stats()
        assert stats.dropped == {"sample": 1}
        assert stats.items == {"sample": 1, "metrics": 2, "dropped": 1}  # one over, for now
        box.ack(in_flight)
        assert box.stats().items == {"metrics": 1}


def test_bad_input_is_refused_and_the_store_is_unchanged(tmp_path: Path) -> None:
    with _open(tmp_path, max_bytes=1000) as box:
        with pytest.raises(ConfigError, match="unknown outbox item kind 'dropped'"):
            box.put("dropped", {})
        with pytest.raises(ConfigError, match="'log'"):
            box.put("log", {})
        with pytest.raises(DataError, match="JSON-serialisable"):
            box.put("metrics", {"x": object()})
        with pytest.raises(DataError, match="NaN"):
            box.put("metrics", {"x": float("nan")})
        with pytest.raises(DataError, match="larger than the outbox cap of 1000"):
            box.put("sample", b"z" * 1001)
        assert box.stats().total_items == 0 and box.stats().dropped == {}
    with pytest.raises(ConfigError, match="max_bytes=0"):
        _open(tmp_path, max_bytes=0)
    garbage = tmp_path / "not-a-db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not-a-db"):
        Outbox.open(garbage)


_WRITER = """
import sys
from edgeloop.agent.outbox import Outbox
box = Outbox.open(sys.argv[1])
i = 0
while True:
    item_id = box.put("metrics", {"i": i, "pad": "p" * 200})
    print(item_id, flush=True)  # only after put returned: the record is committed
    i += 1
"""


def test_kill_9_of_the_writer_loses_nothing_put_returned(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    acknowledged = [proc.stdout.readline().strip() for _ in range(300)]
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is writing the next ones
    proc.wait(timeout=30)
    acknowledged += [line.strip() for line in proc.stdout if line.strip()]
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with Outbox.open(path) as box:
        stored: list[str] = []
        while items := box.batch(max_items=1000):
            stored += [i.id for i in items]
            box.ack([i.id for i in items])
    assert len(acknowledged) >= 300
    assert stored[: len(acknowledged)] == acknowledged
    assert len(stored) - len(acknowledged) <= 1  # at most the one committed but not yet printed


def test_put_many_is_one_transaction_all_or_none(tmp_path: Path) -> None:
    with _open(tmp_path, max_items=4) as box:
        ids = box.put_many([("event", {"e": 1}), ("sample", b"s"), ("metrics", {"m": 1})])
        assert [i.id for i in box.batch(lease_s=3600)] == ids
        with pytest.raises(DataError, match="JSON-serialisable"):
            box.put_many([("metrics", {"ok": 1}), ("metrics", {"bad": {1, 2}})])
        assert box.stats().total_items == 3  # the good one of the failed call is not stored
        more = box.put_many([("sample", {"s": i}) for i in range(3)])  # 6 > 4: two samples go
        assert box.stats().dropped == {"sample": 2}
        assert [i.id for i in box.batch() if i.kind is ItemKind.SAMPLE] == more[2:]


@pytest.mark.bench
def test_cost_of_a_durable_put(tmp_path: Path) -> None:
    """Prints what durability costs here: put latency, put_many throughput (one JSON line)."""
    import json

    payload = {"model": "m", "model_version": "1", "requests": 120, "p99_ms": 4.1, "pad": "x" * 200}
    with _open(tmp_path, max_items=100_000) as box:
        times = []
        for _ in range(1000):
            start = time.perf_counter()
            box.put("metrics", payload)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(10):
            box.put_many([("sample", payload)] * 100)
        many_s = time.perf_counter() - start
        assert box.stats().total_items == 2000
    times.sort()
    print(
        json.dumps(
            {
                "put_n": 1000,
                "put_p50_ms": round(times[500] * 1e3, 2),
                "put_p99_ms": round(times[990] * 1e3, 2),
                "put_per_s": round(1000 / sum(times)),
                "put_many_records_per_s": round(1000 / many_s),
            }
        )
    )


def test_drop_reports_are_outside_the_cap(tmp_path: Path) -> None:
    with _open(tmp_path, max_items=3) as box:
        box.put_many([("metrics", {"m": i}) for i in range(4)])  # one goes
        assert box.batch(lease_s=3600)[0].kind is ItemKind.DROPPED  # a report is now stored
        box.put("metrics", {"m": 4})  # the report does not take a place: one more goes, not two
        assert box.stats().dropped == {"metrics": 2}
        assert box.stats().items == {"metrics": 3, "dropped": 1}
