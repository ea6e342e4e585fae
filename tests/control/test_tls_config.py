"""TLS settings (edgeloop.core.tls) and `edgeloop serve` over HTTPS (issue 17 item 5).

The certificates come from the local fleet's throwaway CA (edgeloop.sdk.fleet_tls).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.tiny_models import make_linear_onnx

from edgeloop.core.errors import ConfigError
from edgeloop.core.tls import (
    PinMismatch,
    TlsConfig,
    client_context,
    fingerprint,
    normalise_pin,
    server_context,
)
from edgeloop.sdk.fleet_tls import FleetTls, make_fleet_tls
from edgeloop.sdk.local_fleet import FleetProcess, _spawn, _stop


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> FleetTls:
    return make_fleet_tls(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> FleetTls:
    return make_fleet_tls(tmp_path_factory.mktemp("other-ca"), name="another CA")


def test_the_key_files_are_private(certs: FleetTls) -> None:
    for key in (certs.key, certs.client_key):
        assert key.stat().st_mode & 0o077 == 0, key
    assert not list(certs.ca.parent.glob("ca.key*"))  # the CA's key is never written


def test_a_missing_file_names_its_flag(certs: FleetTls, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--tls-key .*nope.pem.* does not exist"):
        TlsConfig(cert=certs.cert, key=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="--ca-bundle"):
        TlsConfig(ca_bundle=tmp_path / "none.pem")


def test_a_certificate_without_its_key_is_refused(certs: FleetTls) -> None:
    with pytest.raises(ConfigError, match="go together"):
        TlsConfig(cert=certs.cert)
    with pytest.raises(ConfigError, match="mutual TLS needs TLS"):
        TlsConfig(client_ca=certs.ca)


def test_a_key_that_does_not_match_the_certificate_is_refused(
    certs: FleetTls, other: FleetTls
) -> None:
    with pytest.raises(ConfigError, match="does not match") as err:
        server_context(TlsConfig(cert=certs.cert, key=other.key))
    assert str(other.key) in err.value.message
    assert err.value.hint is not None


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    old = make_fleet_tls(tmp_path, valid_days=-1)
    with pytest.raises(ConfigError, match="expired") as err:
        server_context(TlsConfig(cert=old.cert, key=old.key))
    assert "renew" in (err.value.hint or "")


def test_the_server_context_has_a_tls_1_2_floor_and_mutual_tls(certs: FleetTls) -> None:
    plain = server_context(TlsConfig(cert=certs.cert, key=certs.key))
    assert plain is not None and plain.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert plain.verify_mode == ssl.CERT_NONE
    mutual = server_context(TlsConfig(cert=certs.cert, key=certs.key, client_ca=certs.ca))
    assert mutual is not None and mutual.verify_mode == ssl.CERT_REQUIRED
    assert server_context(TlsConfig()) is None
    client = client_context(TlsConfig(ca_bundle=certs.ca))
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED


def test_a_pin_must_be_a_sha256_fingerprint() -> None:
    assert normalise_pin("AB:" * 31 + "AB") == "ab" * 32
    with pytest.raises(ConfigError, match="64 hex digits"):
        normalise_pin("not-a-fingerprint")


@contextlib.contextmanager
def _https_server(certs: FleetTls) -> Iterator[str]:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    context = server_context(TlsConfig(cert=certs.cert, key=certs.key))
    assert context is not None
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_pinned_client_refuses_another_valid_certificate_before_sending(
    certs: FleetTls,
) -> None:
    pinned = fingerprint(ssl.PEM_cert_to_DER_cert(certs.cert.read_text()))
    with _https_server(certs) as url:
        ok = client_context(TlsConfig(ca_bundle=certs.ca), pin=pinned)
        assert httpx.get(url, verify=ok, timeout=5).text == "ok"
        # The CA vouches for the certificate, but it is not the pinned one.
        wrong = client_context(TlsConfig(ca_bundle=certs.ca), pin="0" * 64)
        with pytest.raises(httpx.ConnectError) as err:
            httpx.get(url, verify=wrong, timeout=5)
        assert isinstance(err.value.__context__, PinMismatch) or "pinned" in str(err.value)


def test_a_client_with_another_ca_refuses_the_server(certs: FleetTls, other: FleetTls) -> None:
    with _https_server(certs) as url, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        httpx.get(url, verify=client_context(TlsConfig(ca_bundle=other.ca)), timeout=5)


# --- edgeloop serve over HTTPS ----------------------------------------------------------------


@contextlib.contextmanager
def _serve(tmp_path: Path, *tls: str) -> Iterator[FleetProcess]:
    model = make_linear_onnx(tmp_path / "lin.onnx", 4, 3, seed=1)
    args = ["serve", str(model), "--port", "0", *tls, "--format", "json"]
    env = {**os.environ, "NO_COLOR": "1"}
    proc, _ = _spawn("serve", "serve", tmp_path / "serve", args, env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.alive():
            text = proc.log.read_text()
            if "\n{" in "\n" + text:  # the ready object, printed once every model loaded
                with contextlib.suppress(ValueError):
                    ready = json.loads(text[text.index("{") :])
                    yield dataclasses.replace(proc, url=ready["url"])
                    return
            time.sleep(0.2)
        raise AssertionError(f"edgeloop serve did not start: {proc.log.read_text()[-2000:]}")
    finally:
        _stop(proc)


_BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@pytest.mark.slow
def test_serve_answers_inference_over_https_and_plain_http_fails_cleanly(
    certs: FleetTls, tmp_path: Path
) -> None:
    with _serve(tmp_path, "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)) as served:
        assert served.url.startswith("https://127.0.0.1:")
        verify = client_context(TlsConfig(ca_bundle=certs.ca))
        with httpx.Client(verify=verify, timeout=30) as client:
            answer = client.post(f"{served.url}/v2/models/lin/infer", json=_BODY)
            assert answer.status_code == 200, answer.text
            plain = served.url.replace("https://", "http://")
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{plain}/v2/health/live", timeout=5)
            # The server is unharmed: the next HTTPS request is answered.
            assert client.get(f"{served.url}/v2/health/live").status_code == 200
        assert "Traceback" not in served.log.read_text()


@pytest.mark.slow
def test_serve_with_mutual_tls_refuses_a_client_without_a_certificate(
    certs: FleetTls, tmp_path: Path
) -> None:
    flags = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    with _serve(tmp_path, *flags, "--tls-client-ca", str(certs.ca)) as served:
        anonymous = client_context(TlsConfig(ca_bundle=certs.ca))
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{served.url}/v2/health/live", verify=anonymous, timeout=5)
        node = client_context(certs.client(mutual=True))
        assert httpx.get(f"{served.url}/v2/health/live", verify=node, timeout=5).status_code == 200


def test_serve_refuses_a_mismatched_key_before_listening(
    certs: FleetTls, other: FleetTls, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from edgeloop.cli.app import app

    model = make_linear_onnx(tmp_path / "lin.onnx", 4, 3, seed=1)
    flags = ["--tls-cert", str(certs.cert), "--tls-key", str(other.key)]
    result = CliRunner().invoke(app, ["serve", str(model), "--port", "0", *flags])
    assert isinstance(result.exception, ConfigError), result.output
    assert "does not match" in result.exception.message
