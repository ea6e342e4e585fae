"""Issue 7's partition figure, short: ``edgeloop control`` frozen (SIGSTOP) or killed and restarted
while a real agent serves traffic; afterwards every telemetry record within the cap arrives exactly
once, over the cap the reported drop count equals what the outbox dropped, and a kill -9 of the
agent during the partition loses nothing its outbox had acknowledged. bench/partition.py runs the
minutes-long version."""

from __future__ import annotations

from pathlib import Path

from tests.agent.partition_run import check, run


def test_within_the_cap_every_record_arrives_exactly_once(tmp_path: Path) -> None:
    facts = run(tmp_path, partition_s=15, rps=40)
    check(facts)
    assert facts["stored"]["sample"] == facts["puts"]["sample"] > 15 * 40 * 0.8
    assert not facts["outbox_dropped"] and "dropped" not in facts["stored"]
    assert facts["during"]["shipper"]["consecutive_failures"] >= 1  # it was cut off


def test_over_the_cap_the_drop_count_is_what_was_dropped(tmp_path: Path) -> None:
    facts = run(tmp_path, partition_s=12, rps=40, outbox_mb=0.05, metrics_every_s=2, cut="kill")
    check(facts)
    dropped = facts["outbox_dropped"]
    assert dropped.get("sample", 0) > 0 and facts["stored"]["dropped"] >= 1
    kept = facts["stored"]["sample"]
    assert kept + dropped["sample"] == facts["puts"]["sample"]


def test_kill_9_during_the_partition_loses_nothing_acknowledged(tmp_path: Path) -> None:
    facts = run(tmp_path, partition_s=16, rps=40, kill=True)
    check(facts)
    assert facts["run1"]["outbox_ids_at_kill"] > 200
