"""TLS settings of every edgeloop wire: server contexts, client contexts, certificate pins.

A server (``edgeloop control``, ``edgeloop agent``, ``edgeloop serve``) is given a certificate
and its key (``--tls-cert``/``--tls-key``) and, for mutual TLS, the CA its clients' certificates
must chain to (``--tls-client-ca``). A client verifies the server against a CA bundle
(``--ca-bundle``; the system's trust store when none), with hostname checks on, and may present
a client certificate. TLS 1.2 is the floor (RFC 8996 deprecates 1.0 and 1.1).

A pin is the SHA-256 of the server certificate's DER bytes (as ``openssl x509 -fingerprint
-sha256`` prints it, lower case). A pinned context checks it right after the handshake, before
a byte of the request (and its bearer token) is sent: a certificate the CA vouches for but that
is not the pinned one is refused with :class:`PinMismatchError`.

The agent's HTTP clients all take ``verify=`` from :func:`client_verify`: the process's one
client setting, made once at start (:func:`configure_clients`).
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from edgeloop.core.errors import ConfigError, TransportError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class PinMismatchError(ssl.SSLCertVerificationError, TransportError):
    """The server's certificate is valid but not the one pinned at enrollment.

    An SSL error first (raised inside the handshake, HTTP clients wrap it as a failed connection)
    and an :class:`EdgeError` too, like every error raised on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        ssl.SSLCertVerificationError.__init__(self, message)  # OSError's own fields
        self.message, self.hint = message, hint

    __str__ = TransportError.__str__  # SSLError's would print the args tuple


PinMismatch = PinMismatchError  # the name it had before it joined the error tree


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Certificates and keys for one process; every field optional.

    ``cert``/``key``: this process's server certificate (PEM) and key; ``client_ca``: the CA a
    client certificate must chain to (the server then requires one: mutual TLS);
    ``ca_bundle``: the CAs a client trusts (None: the system's); ``client_cert``/``client_key``:
    the certificate a client presents for mutual TLS.
    """

    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError(
                "--tls-cert and --tls-key go together; one of them is missing",
                hint="pass both (the certificate chain and its private key, PEM), or neither",
            )
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError(
                "--tls-client-cert and --tls-client-key go together; one of them is missing",
                hint="pass both (this node's client certificate and its key), or neither",
            )
        if self.client_ca is not None and self.cert is None:
            raise ConfigError(
                "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS needs TLS",
                hint="give the server its certificate and key too",
            )
        for flag, path in self._files():
            if not path.is_file():
                raise ConfigError(
                    f"{flag} {str(path)!r} does not exist or is not a file",
                    hint=f"pass the path of a PEM file to {flag}",
                )

    def _files(self) -> list[tuple[str, Path]]:
        named = [
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
            ("--tls-client-ca", self.client_ca),
            ("--ca-bundle", self.ca_bundle),
            ("--tls-client-cert", self.client_cert),
            ("--tls-client-key", self.client_key),
        ]
        return [(flag, path) for flag, path in named if path is not None]

    @property
    def serves_tls(self) -> bool:
        return self.cert is not None


def server_context(config: TlsConfig) -> ssl.SSLContext | None:
    """The server side's context (None without a certificate: plain HTTP).

    Raises:
        ConfigError: a file is unreadable or not PEM, the key does not match the certificate,
            or the certificate has expired or is not valid yet.
    """
    if config.cert is None or config.key is None:
        return None
    check_validity(config.cert, "--tls-cert")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    _load_chain(ctx, config.cert, config.key, "--tls-cert", "--tls-key")
    if config.client_ca is not None:
        _load_cas(ctx, config.client_ca, "--tls-client-ca")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(config: TlsConfig, pin: str | None = None) -> ssl.SSLContext:
    """A client context verifying servers (hostname included) against ``config.ca_bundle`` or
    the system's trust store; refusing any other certificate than ``pin`` when given.

    Raises:
        ConfigError: a file is unreadable or not PEM, or the client key does not match.
    """
    ctx = _PinningContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if config.ca_bundle is not None:
        _load_cas(ctx, config.ca_bundle, "--ca-bundle")
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if config.client_cert is not None and config.client_key is not None:
        check_validity(config.client_cert, "--tls-client-cert")
        _load_chain(
            ctx, config.client_cert, config.client_key, "--tls-client-cert", "--tls-client-key"
        )
    ctx.pin = normalise_pin(pin) if pin else None
    return ctx


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint: 64 lower-case hex digits."""
    return hashlib.sha256(der).hexdigest()


def normalise_pin(pin: str) -> str:
    """``pin`` as 64 lower-case hex digits (colons, as openssl prints them, are dropped).

    Raises:
        ConfigError: not a SHA-256 fingerprint.
    """
    text = pin.strip().replace(":", "").lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(
            f"{pin[:100]!r} is not a SHA-256 certificate fingerprint (64 hex digits expected)",
            hint="print one with `openssl x509 -noout -fingerprint -sha256 -in CERT`",
        )
    return text


def check_validity(cert: Path, flag: str) -> None:
    """Refuse a certificate that has expired or is not valid yet (when ``cryptography`` is
    installed to read its dates; else the peer's check is the only one).

    Raises:
        ConfigError: the certificate is out of its validity period or not PEM.
    """
    try:
        from cryptography import x509
    except ImportError:
        return
    try:
        parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{flag} {str(cert)!r} is not a PEM certificate: {exc}",
            hint="pass the certificate (-----BEGIN CERTIFICATE-----), not its key or a DER file",
        ) from exc
    now = datetime.datetime.now(datetime.UTC)
    if parsed.not_valid_after_utc < now:
        raise ConfigError(
            f"{flag} {str(cert)!r} expired at {parsed.not_valid_after_utc.isoformat()}",
            hint="renew the certificate (peers refuse an expired one) and restart",
        )
    if parsed.not_valid_before_utc > now:
        raise ConfigError(
            f"{flag} {str(cert)!r} is not valid before {parsed.not_valid_before_utc.isoformat()}",
            hint="check this machine's clock, or issue the certificate again",
        )


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, cert_flag: str, key_flag: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        mismatch = "KEY_VALUES_MISMATCH" in str(exc)
        raise ConfigError(
            f"{key_flag} {str(key)!r} does not match {cert_flag} {str(cert)!r}"
            if mismatch
            else f"cannot load {cert_flag} {str(cert)!r} with {key_flag} {str(key)!r}: {exc}",
            hint="pass the private key the certificate was issued for (both PEM, key unencrypted)",
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {cert_flag}/{key_flag}: {exc}") from exc


def _load_cas(ctx: ssl.SSLContext, bundle: Path, flag: str) -> None:
    try:
        ctx.load_verify_locations(cafile=bundle)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{flag} {str(bundle)!r} holds no usable CA certificate: {exc}",
            hint="pass a PEM file of one or more CA certificates",
        ) from exc


class _PinnedSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check_pin(self.context, self.getpeercert(binary_form=True))


class _PinnedObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        _check_pin(self.context, self.getpeercert(binary_form=True))


def _check_pin(ctx: ssl.SSLContext, der: bytes | None) -> None:
    pin = getattr(ctx, "pin", None)
    if pin is None or der is None:
        return
    seen = fingerprint(der)
    if seen != pin:
        raise PinMismatchError(
            f"the server's certificate (sha256 {seen}) is not the one pinned at enrollment "
            f"(sha256 {pin}): refused before anything was sent"
        )


class _PinningContext(ssl.SSLContext):
    """An SSLContext whose connections check ``pin`` after the handshake (sync and async)."""

    pin: str | None = None
    sslsocket_class = _PinnedSocket
    sslobject_class = _PinnedObject


class _Clients:
    """The process's client setting (one agent per process)."""

    config = TlsConfig()
    pinned: ssl.SSLContext | None = None
    plain: ssl.SSLContext | None = None


def configure_clients(config: TlsConfig, pin: str | None = None) -> None:
    """Make the process's client contexts (raises ConfigError as :func:`client_context`)."""
    _Clients.config = config
    _Clients.pinned = client_context(config, pin)
    _Clients.plain = client_context(config)


def set_pin(pin: str) -> None:
    """Pin the control plane's certificate from now on (after enrollment), in every client
    made before too (they share the context)."""
    client_verify().pin = normalise_pin(pin)  # type: ignore[attr-defined]


def client_verify(*, control: bool = True) -> ssl.SSLContext:
    """``verify=`` for an httpx client: to the control plane (pinned, when a pin is set), or
    to another node (``control=False``: the CA bundle only)."""
    if _Clients.pinned is None or _Clients.plain is None:
        configure_clients(_Clients.config)
    context = _Clients.pinned if control else _Clients.plain
    assert context is not None
    return context
