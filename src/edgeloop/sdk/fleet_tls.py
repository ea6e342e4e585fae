"""A throwaway certificate authority for a local fleet (``edgeloop fleet up --tls``).

One CA, one server certificate for ``127.0.0.1``, ``::1`` and ``localhost`` (the control plane
and every agent serve it: they all listen on loopback) and one client certificate (mutual TLS
for the nodes and the admin). The CA's private key is never written: nothing can be issued
from this CA once the fleet is up. Keys are written with mode 0600. ECDSA P-256 keys: small
and fast to make (a 2048-bit RSA key takes ~100 ms each), accepted by every TLS 1.2+ stack.

Needs the ``cryptography`` package (installed with the ``control`` extra).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core.errors import require
from edgeloop.core.files import write_atomic
from edgeloop.core.tls import TlsConfig

HOSTS = ("127.0.0.1", "::1", "localhost")
VALID_DAYS = 30  # a throwaway fleet; long enough for a few weeks of a test bench


@dataclass(frozen=True, slots=True)
class FleetTls:
    """Where a fleet's TLS files are (all PEM)."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    def to_dict(self) -> dict[str, str]:
        return {
            "ca": str(self.ca),
            "cert": str(self.cert),
            "key": str(self.key),
            "client_cert": str(self.client_cert),
            "client_key": str(self.client_key),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FleetTls:
        return cls(
            Path(d["ca"]),
            Path(d["cert"]),
            Path(d["key"]),
            Path(d["client_cert"]),
            Path(d["client_key"]),
        )

    def client(self, *, mutual: bool) -> TlsConfig:
        """A client's settings: trust this CA; present the client certificate if ``mutual``."""
        if not mutual:
            return TlsConfig(ca_bundle=self.ca)
        return TlsConfig(
            ca_bundle=self.ca, client_cert=self.client_cert, client_key=self.client_key
        )


def make_fleet_tls(
    folder: Path,
    *,
    hosts: tuple[str, ...] = HOSTS,
    valid_days: float = VALID_DAYS,
    name: str = "edgeloop local fleet CA",
) -> FleetTls:
    """A fresh CA and its server and client certificates, written under ``folder``.

    ``valid_days`` may be negative (a certificate that has already expired: for tests).

    Raises:
        MissingDependencyError: ``cryptography`` is not installed.
    """
    require("cryptography", "control", "edgeloop fleet up --tls")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=valid_days)
    start = min(now, end) - datetime.timedelta(days=1)  # a day of slack for skewed clocks
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common: str, usage: x509.ObjectIdentifier) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    tls = FleetTls(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )
    server_cert, server_key = leaf("edgeloop local fleet", ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = leaf("edgeloop local fleet node", ExtendedKeyUsageOID.CLIENT_AUTH)
    write_atomic(tls.ca, ca.public_bytes(serialization.Encoding.PEM))
    write_atomic(tls.cert, server_cert)
    write_atomic(tls.key, server_key)  # mkstemp: mode 0600
    write_atomic(tls.client_cert, client_cert)
    write_atomic(tls.client_key, client_key)
    return tls
