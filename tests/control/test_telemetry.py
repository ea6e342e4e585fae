"""Telemetry items from a node: stored once per (node, id), malformed ones rejected by reason."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.control.harness import control


def _item(kind: str = "metrics", **payload: object) -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "kind": kind, "created_at": "2026-11-22T03:04:05.123456Z",
            "content_type": "application/json", "payload": payload}  # fmt: skip


def test_items_are_deduplicated_and_queryable(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("n")
        url = f"/api/v1/nodes/{node.node_id}/telemetry"
        items = [_item(model="lin", model_version="1", requests=5), _item("event", state="COMMIT")]
        first = ctl.ok("POST", url, json={"items": items}, headers=node.auth)
        assert first == {"accepted": 2, "duplicates": 0, "rejected": []}
        again = ctl.ok("POST", url, json={"items": items}, headers=node.auth)
        assert again == {"accepted": 0, "duplicates": 2, "rejected": []}
        stored = ctl.ok("GET", "/api/v1/telemetry?kind=metrics")["items"]
        assert len(stored) == 1
        assert stored[0]["node_id"] == node.node_id and stored[0]["model"] == "lin"
        assert stored[0]["payload"]["requests"] == 5
        assert ctl.ok("GET", "/api/v1/telemetry?model=other")["items"] == []


def test_malformed_items_are_rejected_one_by_one(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("n")
        url = f"/api/v1/nodes/{node.node_id}/telemetry"
        bad_kind = _item("gossip")
        bad_id = {**_item(), "id": "not-a-uuid"}
        bad_b64 = {**_item("sample"), "content_type": "application/octet-stream", "payload": "%%"}
        good = _item()
        answer = ctl.ok("POST", url, json={"items": [bad_kind, bad_id, bad_b64, good]},
                        headers=node.auth)  # fmt: skip
        assert answer["accepted"] == 1 and answer["duplicates"] == 0
        reasons = {r["id"]: r["reason"] for r in answer["rejected"]}
        assert "gossip" in reasons[bad_kind["id"]]
        assert "base64" in reasons[bad_b64["id"]]
        assert "not-a-uuid" in reasons
        shape = ctl.request("POST", url, json={"things": []}, headers=node.auth)
        assert shape.status_code == 422
        many = ctl.request("POST", url, json={"items": [good] * 1001}, headers=node.auth)
        assert many.status_code == 422
