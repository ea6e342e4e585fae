"""The agent's TLS client against real control-plane processes (issue 17 item 5).

Attacks: a control plane whose certificate comes from a CA the agent does not trust (a
machine in the middle), a certificate swapped after it was pinned at enrollment (from a CA the
agent does trust), and a node without a client certificate at a mutual-TLS control plane. In
each, the agent sends nothing (its enrollment token and node token stay unsent) and changes no
state.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.core.tls import TlsConfig
from edgeloop.sdk.control_client import ControlClient
from edgeloop.sdk.fleet_tls import FleetTls, make_fleet_tls
from edgeloop.sdk.local_fleet import FleetProcess, _spawn, _stop, _wait_ready

pytestmark = pytest.mark.slow

WAIT_S = 60.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FleetTls:
    return make_fleet_tls(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> FleetTls:
    return make_fleet_tls(tmp_path_factory.mktemp("other-ca"), name="an attacker's CA")


@contextlib.contextmanager
def _control(
    home: Path, certs: FleetTls, token: str, *extra: str, port: int = 0
) -> Iterator[FleetProcess]:
    args = ["control", "--port", str(port), "--home", str(home)]
    args += ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key), *extra]
    env = {**os.environ, "NO_COLOR": "1", "EDGELOOP_ADMIN_TOKEN": token}
    proc, start = _spawn("control", "control", home, [*args, "--format", "json"], env)
    try:
        yield _wait_ready(proc, start)
    finally:
        _stop(proc)


@contextlib.contextmanager
def _agent(home: Path, control: str, enroll: str, *tls: str) -> Iterator[FleetProcess]:
    args = ["agent", "--control", control, "--port", "0", "--home", str(home)]
    args += ["--poll-s", "0.3", "--name", "n1", *tls]
    env = {**os.environ, "NO_COLOR": "1", "EDGELOOP_ENROLL_TOKEN": enroll}
    proc, start = _spawn("agent", "agent", home, args, env)
    try:
        yield _wait_ready(proc, start)
    finally:
        _stop(proc)


def _enrollment_token(url: str, token: str, tls: TlsConfig) -> str:
    with ControlClient(url, token, tls=tls) as admin:
        return str(admin.enrollment_token()["token"])


def _wait_log(proc: FleetProcess, text: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        log = proc.log.read_text(errors="replace")
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {proc.log}: {proc.log.read_text()[-3000:]}")


def _state(agent_home: Path) -> dict[str, bytes]:
    root = agent_home / "agent"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "outbox" not in p.name
    }


def test_attack_control_plane_with_an_untrusted_ca_gets_no_enrollment(
    certs: FleetTls, other: FleetTls, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    with _control(tmp_path / "control", other, token) as control:
        enroll = _enrollment_token(control.url, token, TlsConfig(ca_bundle=other.ca))
        flags = ["--ca-bundle", str(certs.ca)]
        with _agent(tmp_path / "node", control.url, enroll, *flags) as agent:
            log = _wait_log(agent, "TLS verification failed")
            assert "CERTIFICATE_VERIFY_FAILED" in log
            assert not (tmp_path / "node" / "agent" / "identity.json").exists()
            assert not (tmp_path / "node" / "agent" / "tuf" / "root.json").exists()
        with ControlClient(control.url, token, tls=TlsConfig(ca_bundle=other.ca)) as admin:
            assert admin.nodes() == []  # the enrollment token never reached it


def test_attack_swapped_certificate_after_pinning_is_refused(
    certs: FleetTls, other: FleetTls, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    bundle = tmp_path / "both.pem"  # the agent trusts both CAs: only the pin tells them apart
    bundle.write_bytes(certs.ca.read_bytes() + other.ca.read_bytes())
    admin_tls = TlsConfig(ca_bundle=bundle)
    node_home = tmp_path / "node"
    flags = ["--ca-bundle", str(bundle), "--pin-control-cert"]
    with _control(tmp_path / "control", certs, token) as control:
        port = int(control.url.rsplit(":", 1)[1])
        enroll = _enrollment_token(control.url, token, admin_tls)
        with _agent(node_home, control.url, enroll, *flags) as agent:
            _wait_log(agent, "pinned the control plane's certificate")
    before = _state(node_home)
    assert "control-cert.sha256" in before and "identity.json" in before
    # The impostor holds the same address with a certificate a trusted CA issued.
    with _control(tmp_path / "control", other, token, port=port) as impostor:
        with ControlClient(impostor.url, token, tls=admin_tls) as admin:
            seen = admin.nodes()[0]["last_seen"]
        with _agent(node_home, impostor.url, "", *flags) as agent:
            log = _wait_log(agent, "not the one pinned at enrollment")
            assert "TLS verification failed" in log
            time.sleep(1.0)  # a few refused polls
        with ControlClient(impostor.url, token, tls=admin_tls) as admin:
            assert admin.nodes()[0]["last_seen"] == seen  # no poll or report got through
    assert _state(node_home) == before


def test_attack_node_without_a_client_certificate_at_a_mutual_tls_control_plane(
    certs: FleetTls, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    mutual = certs.client(mutual=True)
    with _control(tmp_path / "control", certs, token, "--tls-client-ca", str(certs.ca)) as control:
        enroll = _enrollment_token(control.url, token, mutual)
        flags = ["--ca-bundle", str(certs.ca)]
        with _agent(tmp_path / "anonymous", control.url, enroll, *flags) as agent:
            _wait_log(agent, "reconcile:")
            time.sleep(1.0)
            assert not (tmp_path / "anonymous" / "agent" / "identity.json").exists()
        with ControlClient(control.url, token, tls=mutual) as admin:
            assert admin.nodes() == []
        # The same token with the node's client certificate enrolls.
        cert = ["--tls-client-cert", str(certs.client_cert)]
        cert += ["--tls-client-key", str(certs.client_key)]
        with _agent(tmp_path / "node", control.url, enroll, *flags, *cert) as agent:
            _wait_log(agent, "enrolled as node")
        with ControlClient(control.url, token, tls=mutual) as admin:
            assert [n["name"] for n in admin.nodes()] == ["n1"]


def test_attack_silent_tls_client_is_closed_after_the_handshake_deadline(
    certs: FleetTls, tmp_path: Path
) -> None:
    from edgeloop.serving.acceptor import HANDSHAKE_TIMEOUT_S

    token = secrets.token_urlsafe(32)
    with _control(tmp_path / "control", certs, token) as control:
        host, port = control.url.removeprefix("https://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as silent:
            silent.settimeout(HANDSHAKE_TIMEOUT_S + 20)
            start = time.monotonic()
            assert silent.recv(100) == b""  # closed by the server, no handshake sent
            waited = time.monotonic() - start
        assert HANDSHAKE_TIMEOUT_S - 1 < waited < HANDSHAKE_TIMEOUT_S + 10
        with ControlClient(control.url, token, tls=TlsConfig(ca_bundle=certs.ca)) as admin:
            assert admin.nodes() == []  # and it still answers
