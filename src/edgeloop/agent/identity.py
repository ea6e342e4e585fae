"""The node's identity: enrollment once, then the stored node id and token.

``POST /api/v1/enroll`` trades a one-use enrollment token for a node id, a node token and the
TUF repository's URLs and root. They are kept in ``HOME/agent/identity.json`` (mode 0600: the
token is a credential), so a restart never enrolls again.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from edgeloop.agent.control_client import ControlClient
from edgeloop.agent.home import AgentHome
from edgeloop.agent.tuf_client import describe_root, store_root
from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.core.files import write_atomic
from edgeloop.core.tls import TlsConfig, configure_clients, fingerprint, normalise_pin, set_pin

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: str
    node_token: str
    control: str
    metadata_url: str
    targets_url: str


class _Pinning:
    at_enrollment = False  # --pin-control-cert: pin the certificate the enrollment answer came over


def trust_control(home: AgentHome, tls: TlsConfig, *, pin: bool) -> str | None:
    """Set this process's TLS clients from ``tls`` and the pin stored in ``home`` (if any);
    with ``pin``, enrollment pins the control plane's certificate. The stored pin, or None.

    Raises:
        ConfigError: a TLS file is unusable, or the stored pin is not a fingerprint.
    """
    try:
        stored: str | None = normalise_pin(home.control_pin.read_text())
    except FileNotFoundError:
        stored = None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the pinned certificate {str(home.control_pin)!r}: {exc}"
        ) from exc
    configure_clients(tls, stored)
    _Pinning.at_enrollment = pin
    return stored


def load_identity(home: AgentHome) -> Identity | None:
    """The stored identity, or None before enrollment.

    Raises:
        ConfigError: the file exists but is not an identity.
    """
    try:
        doc = json.loads(home.identity.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ConfigError(
            f"{str(home.identity)!r} is not valid JSON: {exc}",
            hint="remove it and enroll again with a new --enroll-token",
        ) from exc
    try:
        return Identity(**doc)
    except TypeError as exc:
        raise ConfigError(f"{str(home.identity)!r} is not a node identity: {exc}") from exc


def _save(home: AgentHome, identity: Identity) -> None:
    data = (json.dumps(asdict(identity), indent=2) + "\n").encode()
    tmp = home.identity.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never world-readable
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(home.identity)
    from edgeloop.agent.durable import fsync_dir

    fsync_dir(home.root)


def enroll(
    home: AgentHome,
    client: ControlClient,
    body: dict[str, Any],
    tuf_root: Path | None,
) -> Identity:
    """Enroll with ``body`` (enrollment token, name, capabilities, agent URL); store the result.

    The TUF trust anchor is ``tuf_root`` when given (out of band), else the root in the answer
    (trust on first use, logged as such).

    Raises:
        TransportError: the control plane is unreachable or refused (the message says why).
        ConfigError: ``tuf_root`` cannot be read.
    """
    answer = client.enroll(body)
    try:
        tuf = answer["tuf"]
        identity = Identity(
            node_id=str(answer["node_id"]),
            node_token=str(answer["node_token"]),
            control=client.base,
            metadata_url=urljoin(client.base + "/", str(tuf["metadata_url"])),
            targets_url=urljoin(client.base + "/", str(tuf["targets_url"])),
        )
    except (KeyError, TypeError) as exc:
        raise TransportError(f"the enrollment answer lacks {exc}: {str(answer)[:200]}") from exc
    if tuf_root is not None:
        try:
            root = tuf_root.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--tuf-root {str(tuf_root)!r}: {exc.strerror}") from exc
        store_root(home, root, f"--tuf-root {tuf_root}")
    else:
        root = json.dumps(tuf["root"]).encode()
        store_root(home, root, "the enrollment answer (trust on first use)")
        log.warning("TOFU: trusting the control plane's TUF root %s", describe_root(root))
    _save(home, identity)
    if _Pinning.at_enrollment:
        _pin(home, client)
    return identity


def _pin(home: AgentHome, client: ControlClient) -> None:
    """Store and apply the fingerprint of the certificate the enrollment answer came over."""
    if client.peer_certificate is None:
        log.warning("--pin-control-cert: %s is plain HTTP; nothing to pin", client.base)
        return
    pin = fingerprint(client.peer_certificate)
    write_atomic(home.control_pin, (pin + "\n").encode())
    set_pin(pin)
    log.info("pinned the control plane's certificate sha256 %s", pin)
