"""Issue 7's partition figure, short: ``edgeloop control`` frozen (SIGSTOP) or killed and restarted
while a real agent serves traffic; afterwards every telemetry record within the cap arrives exactly
once, over the cap the reported drop count equals what the outbox dropped, and a kill -9 of the
agent during the partition loses nothing its outbox had acknowledged. bench/partition.py runs the
minutes-long version.

The partitions are short and the request rates high: what is checked depends on how many records
the outbox held (fixed counts, see ``serve_for``), not on how long the link was down, and a short
partition keeps the shipper's exponential backoff (0.5 s doubling, equal jitter) from pushing its
first retry after the reconnection seconds away. Each test prints its facts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.agent.partition_run import Plane, check, plane, run


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """One control plane for the three tests (each its own node, label and deployment): the
    frozen one is resumed and the killed one restarted before the next test starts."""
    with plane(tmp_path_factory.mktemp("partition") / "ctl") as shared:
        yield shared


def test_within_the_cap_every_record_arrives_exactly_once(tmp_path: Path, ctl: Plane) -> None:
    # a frozen control plane costs the shipper its 10 s request timeout before it counts a
    # failure: the partition lasts that long whatever partition_s says (run waits for it)
    facts = run(tmp_path, shared=ctl, partition_s=8, rps=50)
    print(facts)
    check(facts)
    assert facts["stored"]["sample"] == facts["puts"]["sample"] > 8 * 50 * 0.8
    assert not facts["outbox_dropped"] and "dropped" not in facts["stored"]
    assert facts["during"]["shipper"]["consecutive_failures"] >= 1  # it was cut off


def test_over_the_cap_the_drop_count_is_what_was_dropped(tmp_path: Path, ctl: Plane) -> None:
    # 480 requests, as 12 s at 40 rps did; the 50 kB outbox holds ~1/3 of their samples
    facts = run(
        tmp_path, shared=ctl, partition_s=5, rps=96, outbox_mb=0.05, metrics_every_s=2, cut="kill"
    )
    print(facts)
    check(facts)
    dropped = facts["outbox_dropped"]
    assert dropped.get("sample", 0) > 0 and facts["stored"]["dropped"] >= 1
    kept = facts["stored"]["sample"]
    assert kept + dropped["sample"] == facts["puts"]["sample"]


def test_kill_9_during_the_partition_loses_nothing_acknowledged(tmp_path: Path, ctl: Plane) -> None:
    # 320 requests before the kill (4 s at 80 rps), as 8 s at 40 rps did
    facts = run(tmp_path, shared=ctl, partition_s=8, rps=80, kill=True)
    print(facts)
    check(facts)
    assert facts["run1"]["outbox_ids_at_kill"] > 200
