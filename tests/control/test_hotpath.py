"""The agents' hot path (control/hotpath.py): reads on kept connections see every commit made
elsewhere at once (a token revoked or a revision bumped by another writer, as another replica
would), and group-committed writes are all stored, batched, and a bad one fails only itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from tests.control.harness import control

from edgeloop.control import auth, tables
from edgeloop.control.agent_path import AgentPolls
from edgeloop.control.app import create_app
from edgeloop.control.hotpath import GroupCommit
from edgeloop.registry.database import connect


def _other_writer(url: str) -> sa.Engine:
    """A separate engine on the same database: a write through it is what another replica does."""
    return connect(url).engine


def test_revoked_token_is_refused_at_the_next_poll(tmp_path: Path, db_url: str) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        node = ctl.enroll("a")
        url = f"/api/v1/nodes/{node.node_id}/desired"
        for _ in range(20):  # the kept read connections have served this token many times
            assert ctl.request("GET", url, headers=node.auth).status_code == 200
        other = _other_writer(db_url)
        try:
            with other.begin() as conn:  # revoke: the stored hash no longer matches the token
                conn.execute(
                    tables.nodes.update()
                    .where(tables.nodes.c.node_id == node.node_id)
                    .values(token_hash=auth.token_hash(auth.new_token()))
                )
        finally:
            other.dispose()
        for _ in range(8):  # every read thread, not just one, refuses it
            answer = ctl.request("GET", url, headers=node.auth)
            assert answer.status_code == 401, answer.text
        report = ctl.request("POST", f"/api/v1/nodes/{node.node_id}/report",
                             json={"revision": 0}, headers=node.auth)  # fmt: skip
        assert report.status_code == 401


def test_unknown_token_is_refused_after_a_valid_one(tmp_path: Path) -> None:
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("a")
        url = f"/api/v1/nodes/{node.node_id}/desired"
        assert ctl.request("GET", url, headers=node.auth).status_code == 200
        forged = {"Authorization": f"Bearer {node.token[:-2]}xx"}
        assert ctl.request("GET", url, headers=forged).status_code == 401


def test_a_revision_written_elsewhere_is_seen_by_the_next_poll(tmp_path: Path, db_url: str) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        node = ctl.enroll("a")
        url = f"/api/v1/nodes/{node.node_id}/desired"
        first = ctl.request("GET", url, headers=node.auth)
        assert first.headers["etag"] == '"0"'
        cached = {**node.auth, "If-None-Match": '"0"'}
        for _ in range(8):
            assert ctl.request("GET", url, headers=cached).status_code == 304
        other = _other_writer(db_url)
        try:
            with other.begin() as conn:
                conn.execute(
                    tables.nodes.update()
                    .where(tables.nodes.c.node_id == node.node_id)
                    .values(desired_revision=5)
                )
        finally:
            other.dispose()
        for _ in range(8):
            answer = ctl.request("GET", url, headers=cached)
            assert answer.status_code == 200
            assert answer.headers["etag"] == '"5"' and answer.json()["revision"] == 5


def test_concurrent_reports_and_telemetry_are_all_stored_in_fewer_commits(
    tmp_path: Path, db_url: str
) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        nodes = [ctl.enroll(f"n{i}") for i in range(12)]

        async def burst() -> list[int]:
            calls = []
            for i, node in enumerate(nodes):
                calls.append(ctl.client.post(f"/api/v1/nodes/{node.node_id}/report",
                                             json={"revision": i}, headers=node.auth))  # fmt: skip
                items = [{"id": f"0192f0c4-5b7e-7c31-9a2e-4f1d2c3b4a{i:02d}", "kind": "metrics",
                          "created_at": "2026-11-22T03:04:05Z", "payload": {"n": i}}]  # fmt: skip
                calls.append(ctl.client.post(f"/api/v1/nodes/{node.node_id}/telemetry",
                                             json={"items": items}, headers=node.auth))  # fmt: skip
            return [r.status_code for r in await asyncio.gather(*calls)]

        statuses = ctl.portal.call(burst)
        assert statuses == [204, 200] * len(nodes)
        for i, node in enumerate(nodes):
            assert ctl.ok("GET", f"/api/v1/nodes/{node.node_id}")["reported"] == {"revision": i}
        stored = ctl.ok("GET", "/api/v1/telemetry")["items"]
        assert sorted(item["payload"]["n"] for item in stored) == list(range(len(nodes)))
        batches, writes = ctl.plane.hot[1].figures
        assert writes == 2 * len(nodes)
        assert batches < writes  # waiting writes were committed together


def test_a_failing_write_fails_only_itself(db_url: str) -> None:
    db = connect(db_url)
    table = sa.Table("t", sa.MetaData(), sa.Column("k", sa.Integer, primary_key=True))
    table.create(db.engine)
    group = GroupCommit(db)

    def put(k: int) -> Callable[[sa.Connection], int]:
        def write(conn: sa.Connection) -> int:
            if k == 3:
                raise ValueError("refused 3")
            conn.execute(table.insert().values(k=k))
            return k

        return write

    async def many() -> list[object]:
        calls = [group.run(f"put {k}", put(k)) for k in range(8)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        answers = asyncio.run(many())
    finally:
        group.close()
    assert [a for a in answers if isinstance(a, int)] == [0, 1, 2, 4, 5, 6, 7]
    assert isinstance(answers[3], ValueError) and "refused 3" in str(answers[3])
    with db.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(table.c.k)).scalars()) == [0, 1, 2, 4, 5, 6, 7]
    db.engine.dispose()


@pytest.mark.parametrize("bad", [-1, "7", None])
def test_a_bad_report_is_400_and_not_stored(tmp_path: Path, bad: object) -> None:
    with control(tmp_path / "home") as ctl:
        node = ctl.enroll("a")
        answer = ctl.request("POST", f"/api/v1/nodes/{node.node_id}/report",
                             json={"revision": bad}, headers=node.auth)  # fmt: skip
        assert answer.status_code == 400, answer.text
        assert ctl.ok("GET", f"/api/v1/nodes/{node.node_id}")["reported"] is None


def test_concurrent_polls_on_postgres_share_queries_and_each_gets_its_own_node(
    tmp_path: Path, pg_url: str
) -> None:
    with control(tmp_path / "home", pg_url) as ctl:
        nodes = [ctl.enroll(f"n{i}") for i in range(40)]
        forged = {"Authorization": f"Bearer {nodes[0].token[:-2]}xx"}

        async def polls() -> list[tuple[int, str | None]]:
            calls = [ctl.client.get(f"/api/v1/nodes/{node.node_id}/desired", headers=node.auth)
                     for node in nodes]  # fmt: skip
            calls.append(ctl.client.get(f"/api/v1/nodes/{nodes[0].node_id}/desired",
                                        headers=forged))  # fmt: skip
            answers = await asyncio.gather(*calls)
            return [(a.status_code, a.json().get("node_id")) for a in answers]

        reads = ctl.plane.hot[0]
        pg = reads._pg
        assert pg is not None
        before = (pg.checks, pg.queries)
        answers = ctl.portal.call(polls)
        assert answers[:-1] == [(200, node.node_id) for node in nodes]
        assert answers[-1] == (401, None)  # a forged token in the same batch is refused
        checks, queries = pg.checks - before[0], pg.queries - before[1]
        assert checks == len(nodes) + 1
        assert queries < checks  # waiting checks were answered together


def test_a_poll_after_postgres_dropped_the_read_connections_is_answered(
    tmp_path: Path, pg_url: str
) -> None:
    with control(tmp_path / "home", pg_url) as ctl:
        node = ctl.enroll("a")
        url = f"/api/v1/nodes/{node.node_id}/desired"
        assert ctl.request("GET", url, headers=node.auth).status_code == 200
        pg = ctl.plane.hot[0]._pg
        assert pg is not None
        pids = [conn.info.backend_pid for conn in pg._open]
        assert pids
        other = _other_writer(pg_url)
        try:
            with other.begin() as conn:  # the server ends the read sessions (as a restart would)
                for pid in pids:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            other.dispose()
        for _ in range(4):
            answer = ctl.request("GET", url, headers=node.auth)
            assert answer.status_code == 200, answer.text


_SHOWN = ("etag", "content-type", "www-authenticate", "content-length")


def test_polls_answered_in_front_of_the_app_get_the_apps_answers(
    tmp_path: Path, db_url: str
) -> None:
    with control(tmp_path / "home", db_url) as ctl:
        a, b = ctl.enroll("a"), ctl.enroll("b")
        polls = AgentPolls(create_app(ctl.plane, tick_s=None), ctl.plane.hot[0])
        url = f"/api/v1/nodes/{a.node_id}/desired"
        calls = [
            ("GET", url, a.auth),  # its own poll: 200 with the body
            ("GET", url, {**a.auth, "If-None-Match": '"0"'}),  # 304
            ("GET", url, {**a.auth, "If-None-Match": '"7"'}),  # a stale ETag: 200
            ("GET", f"/api/v1/nodes/{b.node_id}/desired", a.auth),  # another node's: 403
            ("GET", url, {"Authorization": f"Bearer {a.token[:-2]}xx"}),  # forged: 401
            ("GET", url, {}),  # no credential: 401
            ("GET", url, {"Authorization": f"Basic {a.token}"}),  # not a bearer token: 401
            ("GET", url, ctl.admin),  # the admin: 200
            ("GET", "/healthz", {}),
            ("GET", f"/api/v1/nodes/{a.node_id}", ctl.admin),
        ]

        async def answers(app: object) -> list[tuple[int, bytes, dict[str, str]]]:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://ctl") as client:
                out = []
                for method, path, headers in calls:
                    r = await client.request(method, path, headers=headers)
                    shown = {k: r.headers[k] for k in _SHOWN if k in r.headers}
                    out.append((r.status_code, r.content, shown))
                return out

        plain = ctl.portal.call(answers, create_app(ctl.plane, tick_s=None))
        fast = ctl.portal.call(answers, polls)
        statuses = [status for status, _, _ in fast]
        assert statuses == [200, 304, 200, 403, 401, 401, 401, 200, 200, 200]
        assert fast == plain
        assert polls.answered == 3  # the node's own polls; the app answered the others
