"""The TLS flags shared by ``edgeloop control``, ``agent`` and ``serve`` (docs/control.md "TLS")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TlsCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        envvar="EDGELOOP_TLS_CERT",
        help="Serve HTTPS with this certificate chain (PEM); needs --tls-key.",
    ),
]
TlsKey = Annotated[
    Path | None,
    typer.Option(
        "--tls-key",
        envvar="EDGELOOP_TLS_KEY",
        help="The private key (PEM, unencrypted, mode 0600) of --tls-cert.",
    ),
]
TlsClientCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-client-ca",
        envvar="EDGELOOP_TLS_CLIENT_CA",
        help="Mutual TLS: require a client certificate issued by this CA (PEM).",
    ),
]
CaBundle = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        envvar="EDGELOOP_CA_BUNDLE",
        help="CA certificates (PEM) to verify the control plane's HTTPS with "
        "[the system's trust store].",
    ),
]
TlsClientCert = Annotated[
    Path | None,
    typer.Option(
        "--tls-client-cert",
        envvar="EDGELOOP_TLS_CLIENT_CERT",
        help="Mutual TLS: this node's client certificate (PEM); needs --tls-client-key.",
    ),
]
TlsClientKey = Annotated[
    Path | None,
    typer.Option(
        "--tls-client-key",
        envvar="EDGELOOP_TLS_CLIENT_KEY",
        help="The private key of --tls-client-cert (PEM).",
    ),
]
