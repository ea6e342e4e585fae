"""Guessing credentials is slowed per source (issue 17, item 8: 3,000 wrong admin tokens at
561/s were all answered 401). Against a real control plane over loopback, where 127.0.0.2 is
another source than 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.control.process import control_process, enroll

from edgeloop.control.throttle import BURST, FailureLimit

ADMIN = "throttle-admin-token-0123456789abcdef"


def _client(source: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30)


def test_wrong_tokens_from_one_source_get_429_and_other_sources_do_not(tmp_path: Path) -> None:
    with control_process(tmp_path / "home", None, admin_token=ADMIN) as proc:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        grant = httpx.post(f"{proc.url}/api/v1/enrollment-tokens", json={}, headers=admin)
        node = enroll(proc.url, grant.json()["token"], "n1")
        poll = f"{proc.url}/api/v1/nodes/{node['node_id']}/desired"
        node_auth = {"Authorization": f"Bearer {node['node_token']}"}
        with _client("127.0.0.1") as guesser, _client("127.0.0.2") as other:
            statuses = []
            for i in range(300):
                wrong = {"Authorization": f"Bearer guess-{i:040d}"}
                answer = guesser.get(f"{proc.url}/api/v1/nodes", headers=wrong)
                statuses.append(answer.status_code)
            assert set(statuses) == {401, 429}
            assert statuses.count(401) <= BURST + 5, statuses.count(401)  # a few drained meanwhile
            assert statuses[-1] == 429
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["type"] == "TooManyFailuresError"
            # The guessing source is refused before its credentials are looked at, right or
            # wrong (else the 429s would tell the right guess apart) ...
            assert guesser.get(f"{proc.url}/api/v1/nodes", headers=admin).status_code == 429
            assert guesser.get(poll, headers=node_auth).status_code == 429
            # ... and nobody else is.
            assert other.get(f"{proc.url}/api/v1/nodes", headers=admin).status_code == 200
            assert other.get(poll, headers=node_auth).status_code == 200
            # Wrong enrollment tokens count too.
            with _client("127.0.0.3") as third:
                body = {"enrollment_token": "nope", "name": "x"}
                answers = [third.post(f"{proc.url}/api/v1/enroll", json=body).status_code
                           for _ in range(BURST + 10)]  # fmt: skip
                assert answers[0] == 401 and answers[-1] == 429


def test_a_source_may_try_again_after_retry_after() -> None:
    now = [0.0]
    limit = FailureLimit(burst=5, per_s=0.5, clock=lambda: now[0])
    for _ in range(5):
        assert limit.refusal("10.0.0.1") is None
        limit.failed("10.0.0.1")
    refusal = limit.refusal("10.0.0.1")
    assert refusal is not None and refusal.retry_after_s == 2
    assert limit.refusal("10.0.0.2") is None
    now[0] += 2.0
    assert limit.refusal("10.0.0.1") is None


def test_a_slow_failing_client_is_never_blocked() -> None:
    now = [0.0]
    limit = FailureLimit(burst=5, per_s=1.0, clock=lambda: now[0])
    for _ in range(1000):  # a stale token polled every 2 s
        assert limit.refusal("10.0.0.1") is None
        limit.failed("10.0.0.1")
        now[0] += 2.0


def test_the_table_is_bounded_and_ipv6_counts_per_64() -> None:
    limit = FailureLimit(burst=3, max_sources=100, clock=lambda: 0.0)
    for i in range(100_000):
        limit.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(limit.table) == 100
    for host in ("2001:db8::1", "2001:db8::2", "2001:db8::3:4"):  # one /64
        limit.failed(host)
    assert limit.refusal("2001:db8::ffff") is not None
    assert limit.refusal("2001:db8:0:1::1") is None  # the next /64


def test_the_drain_rate_comes_from_the_environment_and_a_bad_one_is_refused() -> None:
    from edgeloop.control.throttle import PER_S, PER_S_ENV
    from edgeloop.core.errors import ConfigError

    assert FailureLimit.from_env({}).per_s == PER_S
    assert FailureLimit.from_env({PER_S_ENV: " "}).per_s == PER_S
    assert FailureLimit.from_env({PER_S_ENV: "0.25"}).per_s == 0.25
    for bad in ("0", "-1", "nan", "inf", "fast"):
        with pytest.raises(ConfigError, match=PER_S_ENV):
            FailureLimit.from_env({PER_S_ENV: bad})
