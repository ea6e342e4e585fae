"""The checks an update makes on what a deployment document names, apart from the updater's I/O.

- :func:`profile_target`: the drift monitor's reference profile a model entry names.
- :func:`matching_profile`: that profile's signed facts, checked against the document.
- :func:`guard_breach`: whether the server's figures since ACTIVATE breach the document's guard.
- :func:`node_of`: the node a slot's document was written for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuf.api.metadata import TargetFile

from edgeloop.agent.deployment import Guard
from edgeloop.agent.health import HealthFigures
from edgeloop.agent.tuf_client import TufSession
from edgeloop.core.errors import UntrustedArtifactError


@dataclass(frozen=True, slots=True)
class ProfileTarget:
    """The reference profile a deployment entry names: its signed target, sha256, length."""

    target: str
    sha256: str
    length: int


def profile_target(entry: Mapping[str, Any]) -> ProfileTarget | None:
    """The ``profile`` of a model entry (None when it names none).

    Raises:
        UntrustedArtifactError: the entry's ``profile`` is not ``{target, sha256, length}``.
    """
    raw = entry.get("profile")
    if raw is None:
        return None
    target = raw.get("target") if isinstance(raw, dict) else None
    sha, length = (raw.get("sha256"), raw.get("length")) if isinstance(raw, dict) else (None, None)
    if (
        not isinstance(target, str)
        or not target.startswith("artifacts/")
        or ".." in target
        or not isinstance(sha, str)
        or len(sha) != 64
        or isinstance(length, bool)
        or not isinstance(length, int)
        or length < 1
    ):
        raise UntrustedArtifactError(
            f"the deployment's profile entry {str(raw)[:120]!r} is not "
            "{target (artifacts/...), sha256 (64 hex digits), length >= 1}",
            hint="the control plane wrote a bad document; re-publish the deployment",
        )
    return ProfileTarget(target, sha, length)


def matching_profile(tuf: TufSession, wanted: ProfileTarget) -> TargetFile:
    """The signed facts of the profile, checked against what the document says."""
    info = tuf.info(wanted.target)
    signed = info.hashes.get("sha256")
    if info.length != wanted.length or signed != wanted.sha256:
        raise UntrustedArtifactError(
            f"{wanted.target}: the deployment says {wanted.length} B sha256 "
            f"{wanted.sha256[:12]}, the signed targets say {info.length} B sha256 "
            f"{str(signed)[:12]}",
            hint="the deployment and the targets metadata disagree; re-publish the deployment",
        )
    return info


def guard_breach(figures: HealthFigures, guard: Guard) -> str | None:
    """Why ``figures`` breach ``guard``, or None (too few requests to judge: no breach)."""
    if figures.requests == 0 or figures.requests < guard.min_requests:
        return None
    rate, p99 = figures.error_rate, figures.p99_ms
    if guard.max_error_rate is not None and rate is not None and rate > guard.max_error_rate:
        return (f"error rate {rate:.3f} ({figures.errors}/{figures.requests}) > "
                f"{guard.max_error_rate}")  # fmt: skip
    if guard.max_p99_ms is not None and p99 is not None and p99 > guard.max_p99_ms:
        return f"p99 {p99:.1f} ms > {guard.max_p99_ms} ms"
    return None


def node_of(document: bytes) -> str:
    """The ``node_id`` a deployment document names ("" when it is not a JSON object)."""
    try:
        return str(json.loads(document).get("node_id"))
    except (ValueError, AttributeError):
        return ""
