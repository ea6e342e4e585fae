"""The updater's state machine on real files, a real tiny model and a real signed repository."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from tests.agent.conftest import Node
from tests.agent.fleet_stub import publish, publish_doc, self_test_for

from edgeloop.agent.slots import sha256_file
from edgeloop.agent.update_state import (
    TRANSITIONS,
    Outcome,
    TransitionError,
    UpdateRecord,
    UpdateState,
    check_transition,
    load_record,
)
from edgeloop.agent.updater import Updater
from edgeloop.core.errors import UntrustedArtifactError

S = UpdateState


def test_first_update_commits_into_slot_a(node: Node, models: dict[int, Path]) -> None:
    publish(node.stub.repo, models[1], 1, version=1)
    assert node.update() is Outcome.COMMITTED
    active = node.active()
    assert active is not None and active.slot == "a" and active.version == 1
    assert active.sha256 == sha256_file(models[1]) == sha256_file(active.file)
    record = load_record(node.home.update_state)
    assert (record.state, record.revision, record.outcome) == (S.IDLE, 1, Outcome.COMMITTED)
    states = [e.state for e in record.events]
    assert states == ["DOWNLOAD", "VERIFY", "STAGE", "SELF_TEST", "ACTIVATE", "WATCH", "COMMIT",
                      "IDLE"]  # fmt: skip
    assert node.updater.self_test is not None and node.updater.self_test.passed
    assert node.updater.self_test.max_abs_diff is not None
    assert node.updater.self_test.max_abs_diff < 1e-4


def test_second_update_goes_to_the_other_slot_and_keeps_the_first(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    assert node_on_v1.update() is Outcome.COMMITTED
    active = node_on_v1.active()
    assert active is not None and (active.slot, active.version) == ("b", 2)
    previous = node_on_v1.updater.slots.read("a")
    assert previous is not None and previous.version == 1


def test_failed_self_test_rolls_back_and_is_not_retried(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    wrong = self_test_for(models[1])  # version 1's outputs: version 2 does not give them
    publish(node_on_v1.stub.repo, models[2], 2, version=2, self_test=wrong)
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    active = node_on_v1.active()
    assert active is not None and (active.slot, active.version) == ("a", 1)
    record = node_on_v1.updater.record
    assert record.failed_revision == 2 and record.revision == 2
    assert record.error is not None and "self-test failed" in record.error
    assert not node_on_v1.updater.wants(2)
    assert node_on_v1.updater.wants(3)


def test_a_model_that_cannot_load_is_rolled_back(
    node_on_v1: Node, models: dict[int, Path], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model at all" * 10)
    publish(node_on_v1.stub.repo, garbage, 2, version=2, self_test=self_test_for(models[2]))
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert node_on_v1.updater.record.error is not None
    assert "load failed" in node_on_v1.updater.record.error
    active = node_on_v1.active()
    assert active is not None and active.version == 1


def test_every_recorded_transition_is_allowed(node_on_v1: Node, models: dict[int, Path]) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2, self_test=self_test_for(models[1]))
    node_on_v1.update()
    events = [S.IDLE] + [S(e.state) for e in node_on_v1.updater.record.events]
    for old, new in itertools.pairwise(events):
        if old is not S.IDLE or new is S.DOWNLOAD:
            assert (old, new) in TRANSITIONS


def test_a_transition_outside_the_table_is_refused() -> None:
    with pytest.raises(TransitionError, match="IDLE -> ACTIVATE"):
        check_transition(S.IDLE, S.ACTIVATE)
    with pytest.raises(TransitionError):
        UpdateRecord().moved(S.COMMIT, "skipping everything")


@pytest.mark.parametrize("state", [S.DOWNLOAD, S.VERIFY, S.STAGE, S.SELF_TEST])
def test_restart_before_activate_keeps_the_old_slot_and_retries(
    node_on_v1: Node, state: UpdateState
) -> None:
    record = node_on_v1.updater.record
    crashed = UpdateRecord(state=state, revision=1, target_revision=2, from_slot="a", to_slot="b",
                           events=record.events)  # fmt: skip
    _write(node_on_v1, crashed)
    updater = Updater(node_on_v1.home)
    updater.recover()
    assert updater.record.state is S.IDLE and updater.record.outcome is Outcome.INTERRUPTED
    assert updater.slots.active_name() == "a" and updater.wants(2)


@pytest.mark.parametrize("state", [S.ACTIVATE, S.WATCH, S.ROLLBACK])
def test_restart_after_activate_rolls_back(
    node_on_v1: Node, models: dict[int, Path], state: UpdateState
) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    assert node_on_v1.update() is Outcome.COMMITTED  # slot b holds version 2, active
    # As if the update to b had been cut short after the pointer moved:
    _write(node_on_v1, UpdateRecord(state=state, revision=1, target_revision=2, from_slot="a",
                                    to_slot="b"))  # fmt: skip
    updater = Updater(node_on_v1.home)
    updater.recover()
    assert updater.slots.active_name() == "a"
    assert updater.record.state is S.IDLE and updater.record.outcome is Outcome.ROLLED_BACK
    assert updater.record.failed_revision == 2
    served = updater.startup_check()
    assert served is not None and served.version == 1
    assert updater.self_test is not None and updater.self_test.passed


def test_restart_in_commit_finishes_the_commit(node_on_v1: Node) -> None:
    _write(node_on_v1, UpdateRecord(state=S.COMMIT, revision=0, target_revision=1, from_slot=None,
                                    to_slot="a"))  # fmt: skip
    updater = Updater(node_on_v1.home)
    updater.recover()
    assert updater.record.state is S.IDLE and updater.record.revision == 1
    assert updater.record.outcome is Outcome.COMMITTED and updater.slots.active_name() == "a"


def test_startup_check_falls_back_when_the_active_file_was_damaged(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    assert node_on_v1.update() is Outcome.COMMITTED
    active = node_on_v1.active()
    assert active is not None and active.slot == "b"
    data = bytearray(active.file.read_bytes())
    data[-5] ^= 0xFF
    active.file.write_bytes(bytes(data))
    updater = Updater(node_on_v1.home)
    served = updater.startup_check()
    assert served is not None and (served.slot, served.version) == ("a", 1)
    assert updater.slots.active_name() == "a"


def test_a_crash_mid_stage_leaves_the_slot_empty(node_on_v1: Node) -> None:
    slots = node_on_v1.updater.slots
    (slots.root / "b" / "deployment.json").write_text("{}")  # staged half: no meta.json
    assert slots.read("b") is None
    assert slots.read("a") is not None


def test_an_interrupted_download_resumes_with_range(
    node_on_v1: Node, models: dict[int, Path], tmp_path: Path
) -> None:
    big = tmp_path / "big.onnx"
    big.write_bytes(models[2].read_bytes())
    publish(node_on_v1.stub.repo, big, 2, version=2)
    session = node_on_v1.session()
    try:
        info = session.info("artifacts/linear-2.onnx")
        part = session.fetcher.part_path(session.url(info))
        part.write_bytes(big.read_bytes()[:100])  # what a killed download left
        node_on_v1.stub.requests.clear()
        assert session.download(info) == info.length
    finally:
        session.fetcher.close()
    assert part.read_bytes() == big.read_bytes()
    assert sum("artifacts/" in r for r in node_on_v1.stub.requests) == 1


def test_a_resumed_download_continues_the_part_and_tuf_catches_a_bad_one(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    genuine = models[2].read_bytes()
    session = node_on_v1.session()
    try:
        info = session.info("artifacts/linear-2.onnx")
        part = session.fetcher.part_path(session.url(info))
        part.write_bytes(b"\0" * 100)  # a part damaged on disk
        assert session.download(info) == info.length
        # Only the rest came over the network (Range), so the damage is still there ...
        assert part.read_bytes() == b"\0" * 100 + genuine[100:]
        # ... and the Updater's length + hash check refuses it, and the part is dropped.
        with pytest.raises(UntrustedArtifactError, match="TUF verification failed"):
            session.verify(info)
        assert not part.exists()
    finally:
        session.fetcher.close()


def _write(node: Node, record: UpdateRecord) -> None:
    node.home.update_state.write_text(json.dumps(record.to_dict()))


def test_a_deployment_naming_no_model_stops_serving(node_on_v1: Node) -> None:
    publish_doc(node_on_v1.stub.repo, 2, models=[], watch_s=0)
    assert node_on_v1.update() is Outcome.COMMITTED
    assert node_on_v1.active() is None and node_on_v1.updater.slots.active_name() is None
    assert node_on_v1.updater.record.revision == 2


def test_serving_settings_the_server_refuses_roll_back_before_download(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    publish(node_on_v1.stub.repo, models[2], 2, version=2, serving={"max_batch": 0})
    node_on_v1.stub.requests.clear()
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert "max_batch=0" in (node_on_v1.updater.record.error or "")
    assert not any("artifacts/" in r for r in node_on_v1.stub.requests)
    active = node_on_v1.active()
    assert active is not None and active.version == 1


def test_a_malformed_document_is_refused_before_the_updater_starts(node_on_v1: Node) -> None:
    publish_doc(node_on_v1.stub.repo, 2, models=[{"name": "x", "version": 1}] * 2)
    with pytest.raises(UntrustedArtifactError, match="at most one model"):
        node_on_v1.update()
    assert node_on_v1.updater.record.state is S.IDLE and node_on_v1.updater.record.revision == 1


def test_a_revision_interrupted_three_times_is_given_up(node_on_v1: Node) -> None:
    for attempt in range(1, 4):
        record = node_on_v1.updater.record
        crashed = UpdateRecord(state=S.STAGE, revision=1, target_revision=2, from_slot="a",
                               to_slot="b", attempts=record.attempts,
                               attempt_revision=2)  # fmt: skip
        _write(node_on_v1, crashed)
        node_on_v1.updater = Updater(node_on_v1.home)
        node_on_v1.updater.recover()
        node_on_v1.updater.acknowledge(node_on_v1.updater.record.events)  # reported meanwhile
        assert node_on_v1.updater.wants(2) is (attempt < 3)
    assert node_on_v1.updater.record.failed_revision == 2
    assert node_on_v1.updater.slots.active_name() == "a"


def test_an_os_error_while_staging_rolls_back(node_on_v1: Node, models: dict[int, Path]) -> None:
    slot_b = node_on_v1.updater.slots.root / "b"
    slot_b.rmdir()
    slot_b.write_text("a file where the slot folder should be")  # staging into it fails
    publish(node_on_v1.stub.repo, models[2], 2, version=2)
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    assert "NotADirectoryError" in (node_on_v1.updater.record.error or "")
    assert node_on_v1.updater.record.state is S.IDLE
    active = node_on_v1.active()
    assert active is not None and (active.slot, active.version) == ("a", 1)


def _openvino() -> None:
    from edgeloop.runtime import get_engine

    ok, reason = get_engine("openvino").available()
    if not ok:
        pytest.skip(reason)


def test_self_test_runs_on_the_serving_engine_against_its_own_reference(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    """Served on OpenVINO, the model is checked on OpenVINO against the document's OpenVINO
    outputs: a wrong OpenVINO reference fails it although ONNX Runtime's reference is right."""
    _openvino()
    right, wrong = self_test_for(models[2]), self_test_for(models[1])
    right["engines"] = {"openvino": {"outputs": wrong["outputs"]}}
    publish(node_on_v1.stub.repo, models[2], 2, version=2, self_test=right,
            serving={"engine": "openvino"})  # fmt: skip
    assert node_on_v1.update() is Outcome.ROLLED_BACK
    result = node_on_v1.updater.self_test
    assert result is not None and result.engine == "openvino" and not result.passed
    assert "on openvino" in result.detail

    right["engines"] = {"openvino": {"outputs": right["outputs"]}}
    publish(node_on_v1.stub.repo, models[2], 3, version=2, self_test=right,
            serving={"engine": "openvino"})  # fmt: skip
    assert node_on_v1.update() is Outcome.COMMITTED
    result = node_on_v1.updater.self_test
    assert result is not None and result.passed and result.engine == "openvino"
    assert result.to_dict()["engine"] == "openvino"


def test_without_a_reference_for_the_serving_engine_the_check_runs_on_onnx_runtime(
    node_on_v1: Node, models: dict[int, Path]
) -> None:
    _openvino()
    publish(node_on_v1.stub.repo, models[2], 2, version=2, serving={"engine": "openvino"})
    assert node_on_v1.update() is Outcome.COMMITTED
    result = node_on_v1.updater.self_test
    assert result is not None and result.passed and result.engine == "onnxruntime"
    assert "the document has no openvino reference" in result.detail


def test_update_failed_error_is_an_edge_error_with_its_message() -> None:
    from edgeloop.agent.updater import UpdateFailedError
    from edgeloop.core.errors import EdgeError

    exc = UpdateFailedError("self-test failed: max |diff| 0.5")
    assert isinstance(exc, EdgeError)
    assert exc.message == str(exc) == "self-test failed: max |diff| 0.5"
