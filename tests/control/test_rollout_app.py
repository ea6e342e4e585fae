"""Rollouts driven through the app by enrolled nodes reading their signed documents and
reporting over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.control.harness import Control, Node, control
from tests.tiny_models import make_linear_onnx


def _setup(tmp_path: Path, ctl: Control, count: int) -> list[Node]:
    ctl.publish(make_linear_onnx(tmp_path / "a.onnx", seed=1), "lin")
    ctl.publish(make_linear_onnx(tmp_path / "b.onnx", seed=2), "lin")
    return [ctl.enroll(f"n{i}", {"site": "a"}) for i in range(count)]


def _deploy(ctl: Control, model: str, waves: list[str], **plan: Any) -> dict[str, Any]:
    spec = {"name": "d", "model": model, "selector": {"labels": {"site": "a"}},
            "plan": {"waves": waves, "soak_s": 0, **plan}}  # fmt: skip
    return dict(ctl.ok("POST", "/api/v1/deployments", json=spec))


def _rollout(ctl: Control, rollout_id: str) -> dict[str, Any]:
    return dict(ctl.ok("GET", f"/api/v1/rollouts/{rollout_id}"))


def _complete(ctl: Control, nodes: list[Node], model: str) -> dict[str, Any]:
    ro = _deploy(ctl, model, ["100%"])
    for node in nodes:
        node.act()
    ctl.tick(2)
    done = _rollout(ctl, ro["rollout_id"])
    assert done["state"] == "COMPLETED", done["events"]
    return done


def _models_named(node: Node) -> list[tuple[str, int]]:
    if node.desired()["revision"] == 0:
        return []
    return [(m["variant"], m["version"]) for m in node.document()["models"]]


def test_waves_soak_and_complete_in_order(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 4)
        ro = _deploy(ctl, "lin:1", ["1", "50%", "100%"])
        assert [len(w) for w in ro["waves"]] == [1, 1, 2]
        assert ro["state"] == "WAVE" and ro["wave"] == 0
        by_id = {n.node_id: n for n in nodes}
        waves = [[by_id[i] for i in wave] for wave in ro["waves"]]
        outside = [n for n in nodes if n not in waves[0]]
        assert [n.desired()["revision"] for n in outside] == [0, 0, 0]
        ctl.tick(3)  # nobody reported: the wave waits
        assert _rollout(ctl, ro["rollout_id"])["state"] == "WAVE"
        for index, wave in enumerate(waves):
            for node in wave:
                doc = node.act()
                assert doc["rollout"] == ro["rollout_id"] and doc["wave"] == index
            ctl.tick()
            assert _rollout(ctl, ro["rollout_id"])["state"] == "SOAKING"
            ctl.tick()
        final = _rollout(ctl, ro["rollout_id"])
        assert final["state"] == "COMPLETED"
        states = [e["state"] for e in final["events"]]
        assert states == ["PENDING", "WAVE", "SOAKING", "WAVE", "SOAKING", "WAVE", "SOAKING",
                          "COMPLETED"]  # fmt: skip
        assert all(_models_named(n) == [("lin:1", 1)] for n in nodes)


def test_guard_breach_halts_reverts_only_the_wave_and_the_rest_never_get_it(
    tmp_path: Path,
) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 3)
        _complete(ctl, nodes, "lin:1")
        ro = _deploy(ctl, "lin:2", ["1", "100%"])
        first = next(n for n in nodes if n.node_id == ro["waves"][0][0])
        rest = [n for n in nodes if n is not first]
        assert _models_named(first) == [("lin:2", 2)]
        first.act(healthy=False)  # the agent's self-test failed; it kept lin:1
        ctl.tick()
        halted = _rollout(ctl, ro["rollout_id"])
        assert halted["state"] == "HALTED"
        assert "guard breach in wave 0" in halted["events"][-1]["detail"]
        assert _models_named(first) == [("lin:1", 1)]  # reverted to its previous document
        first.act()
        ctl.tick()
        assert _rollout(ctl, ro["rollout_id"])["state"] == "ROLLED_BACK"
        ctl.tick(3)
        for node in rest:
            assert _models_named(node) == [("lin:1", 1)]
            assert node.desired()["revision"] == 1  # never given a document naming lin:2


def test_health_breach_during_soak_halts(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 2)
        _complete(ctl, nodes, "lin:1")
        ro = _deploy(ctl, "lin:2", ["1", "100%"], soak_s=3600, guard={"max_error_rate": 0.1})
        first = next(n for n in nodes if n.node_id == ro["waves"][0][0])
        first.act()
        ctl.tick()
        assert _rollout(ctl, ro["rollout_id"])["state"] == "SOAKING"
        first.act(error_rate=0.5)  # measured by its server: half the requests failed
        ctl.tick()
        halted = _rollout(ctl, ro["rollout_id"])
        assert halted["state"] == "HALTED"
        assert "error rate 0.5000 > max_error_rate 0.1" in halted["events"][-1]["detail"]


def test_manual_rollback_to_an_earlier_version(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 2)
        _complete(ctl, nodes, "lin:1")
        second = _complete(ctl, nodes, "lin:2")
        assert all(_models_named(n) == [("lin:2", 2)] for n in nodes)
        back = ctl.ok("POST", f"/api/v1/rollouts/{second['rollout_id']}/rollback",
                      json={"to": "lin:1"})  # fmt: skip
        assert back["state"] == "ROLLED_BACK"
        assert all(_models_named(n) == [("lin:1", 1)] for n in nodes)
        # And without "to": each node gets the document it had before the rollout.
        third = _complete(ctl, nodes, "lin:2")
        ctl.ok("POST", f"/api/v1/rollouts/{third['rollout_id']}/rollback", json={})
        assert all(_models_named(n) == [("lin:1", 1)] for n in nodes)


def test_rolling_back_an_older_rollout_under_a_newer_one_is_refused(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 2)
        older = _complete(ctl, nodes, "lin:1")
        newer = _deploy(ctl, "lin:2", ["1", "100%"], soak_s=3600)
        url = f"/api/v1/rollouts/{older['rollout_id']}/rollback"
        response = ctl.request("POST", url, json={}, headers=ctl.admin)
        assert response.status_code == 409
        assert newer["rollout_id"] in response.json()["error"]
        assert _rollout(ctl, older["rollout_id"])["state"] == "COMPLETED"


def test_pause_stops_progress_and_resume_continues(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 2)
        ro = _deploy(ctl, "lin:1", ["1", "100%"])
        rid = ro["rollout_id"]
        assert ctl.ok("POST", f"/api/v1/rollouts/{rid}/pause")["state"] == "PAUSED"
        for node in nodes:
            if node.desired()["revision"]:
                node.act()
        ctl.tick(3)
        assert _rollout(ctl, rid)["state"] == "PAUSED"
        assert ctl.ok("POST", f"/api/v1/rollouts/{rid}/resume")["state"] == "WAVE"
        ctl.tick()
        assert _rollout(ctl, rid)["state"] == "SOAKING"
        response = ctl.request("POST", f"/api/v1/rollouts/{rid}/resume", headers=ctl.admin)
        assert response.status_code == 409
        assert response.json()["type"] == "ConflictError"


def test_a_second_rollout_over_busy_nodes_is_refused(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        _setup(tmp_path, ctl, 2)
        _deploy(ctl, "lin:1", ["1", "100%"])
        spec = {"name": "other", "model": "lin:2"}
        response = ctl.request("POST", "/api/v1/deployments", json=spec, headers=ctl.admin)
        assert response.status_code == 409
        assert "still in progress" in response.json()["error"]


def test_bad_specs_are_400_naming_the_field(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        _setup(tmp_path, ctl, 1)
        bad = [
            ({"name": "d", "model": "lin:1", "plan": {"waves": ["150%"]}}, "plan wave"),
            ({"name": "d", "model": "lin:1", "selector": {"labels": {"site": "zz"}}}, "no node"),
            ({"name": "d", "model": "lin:9"}, "lin"),
            ({"name": "d", "modle": "lin:1"}, "modle is not a known field"),
        ]
        for spec, words in bad:
            response = ctl.request("POST", "/api/v1/deployments", json=spec, headers=ctl.admin)
            assert response.status_code in (400, 404), response.text
            assert words in response.json()["error"]


def test_document_carries_a_self_test_computed_by_onnx_runtime(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 1)
        _deploy(ctl, "lin:1", ["100%"])
        entry = nodes[0].document()["models"][0]
        assert entry["target"] == "artifacts/lin-1.onnx"
        test = entry["self_test"]
        assert test["inputs"]["input"]["shape"] == [4, 4]
        assert test["outputs"]["output"]["shape"] == [4, 3]
        # every other ONNX engine installed here gives its own reference (OpenVINO is in the
        # test environment; an INT8 model's outputs differ between engines)
        assert test["engines"]["openvino"]["outputs"]["output"]["shape"] == [4, 3]
        targets = ctl.plane.repo.targets()
        assert targets["artifacts/lin-1.onnx"].hashes["sha256"] == entry["sha256"]


def test_artifact_download_resumes_with_range(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        nodes = _setup(tmp_path, ctl, 1)
        _deploy(ctl, "lin:1", ["100%"])
        entry = nodes[0].document()["models"][0]
        url = f"/tuf/targets/artifacts/{entry['sha256']}.lin-1.onnx"
        whole = ctl.request("GET", url, headers=nodes[0].auth)
        assert whole.status_code == 200 and len(whole.content) == entry["length"]
        tail = ctl.request("GET", url, headers={**nodes[0].auth, "Range": "bytes=100-"})
        assert tail.status_code == 206
        assert tail.content == whole.content[100:]


def test_a_tick_that_crashes_does_not_stop_the_other_rollouts(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """A bug in one rollout's tick (any exception, not only an EdgeError) is logged with its
    traceback and the other rollouts still move on that same tick."""
    with control(tmp_path / "home") as ctl:
        ctl.publish(make_linear_onnx(tmp_path / "a.onnx", seed=1), "lin")
        a = ctl.enroll("a0", {"site": "a"})
        b = ctl.enroll("b0", {"site": "b"})
        broken = _deploy(ctl, "lin:1", ["100%"])
        spec = {"name": "e", "model": "lin:1", "selector": {"labels": {"site": "b"}},
                "plan": {"waves": ["100%"], "soak_s": 0}}  # fmt: skip
        healthy = ctl.ok("POST", "/api/v1/deployments", json=spec)
        real_tick = ctl.plane.tick

        def tick(rollout_id: str) -> Any:
            if rollout_id == broken["rollout_id"]:
                raise RuntimeError("a bug in this rollout's tick")
            return real_tick(rollout_id)

        monkeypatch.setattr(ctl.plane, "tick", tick)
        a.act()
        b.act()
        ctl.tick(2)
        assert _rollout(ctl, healthy["rollout_id"])["state"] == "COMPLETED"
        assert _rollout(ctl, broken["rollout_id"])["state"] == "WAVE"
        assert "a bug in this rollout's tick" in caplog.text
