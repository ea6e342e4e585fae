"""The control plane's HTTP API as the agent calls it (docs/fleet-protocol.md)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from edgeloop.core.errors import TransportError
from edgeloop.core.tls import client_verify

_MUTUAL_HINT = (
    "; a TLS connection closed at once can mean that the control plane requires a client "
    "certificate (mutual TLS): pass --tls-client-cert and --tls-client-key"
)
_TIMEOUT_S = 10.0  # finite by default; the control plane answers in milliseconds


@dataclass(frozen=True, slots=True)
class Desired:
    """``GET /nodes/{id}/desired``: the revision and the document's target; ETag for polling."""

    revision: int
    target: str
    etag: str | None


class ControlClient:
    """Calls to ``base`` (``http://host:port``); every failure is a :class:`TransportError`."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=self.base, timeout=_TIMEOUT_S, headers=headers, verify=client_verify()
        )
        self.peer_certificate: bytes | None = None  # DER, of the last HTTPS answer's server

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            if _tls_failure(exc):
                raise TransportError(
                    f"control plane {self.base}: TLS verification failed ({exc})",
                    hint="pass the CA that issued its certificate with --ca-bundle; if it was "
                    "pinned at enrollment and renewed on purpose, remove "
                    "HOME/agent/control-cert.sha256 and restart",
                ) from exc
            raise TransportError(
                f"control plane {self.base} unreachable ({type(exc).__name__}: {exc})",
                hint="the agent keeps serving and retries with back-off"
                + (_MUTUAL_HINT if self.base.startswith("https:") else ""),
            ) from exc
        if response.status_code >= 400:
            raise TransportError(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response

    def enroll(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._call("POST", "/api/v1/enroll", json=body)
        self.peer_certificate = _peer_certificate(response)
        answer: dict[str, Any] = response.json()
        return answer

    def desired(self, node_id: str, etag: str | None) -> Desired | None:
        """The desired state, or None when unchanged since ``etag`` (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._call("GET", f"/api/v1/nodes/{node_id}/desired", headers=headers)
        if response.status_code == 304:
            return None
        doc = response.json()
        try:
            return Desired(int(doc["revision"]), str(doc["target"]), response.headers.get("etag"))
        except (KeyError, TypeError, ValueError) as exc:
            raise TransportError(f"desired state without {exc}: {response.text[:200]}") from exc

    def report(self, node_id: str, body: dict[str, Any]) -> None:
        self._call("POST", f"/api/v1/nodes/{node_id}/report", json=body)


def _peer_certificate(response: httpx.Response) -> bytes | None:
    """The DER certificate the server of ``response`` presented (None over plain HTTP)."""
    stream = response.extensions.get("network_stream")
    tls = stream.get_extra_info("ssl_object") if stream is not None else None
    der = tls.getpeercert(True) if tls is not None else None  # the C object: no keywords
    return bytes(der) if der else None


def _tls_failure(exc: BaseException) -> bool:
    """True when ``exc`` came from TLS (an unverifiable or unpinned certificate, an alert)."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore's error, which wraps ssl's
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
