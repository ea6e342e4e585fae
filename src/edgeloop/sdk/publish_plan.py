"""Whether a local registry version can go to a control plane and keep its ``NAME:VERSION``
(``edgeloop fleet publish``, :meth:`~edgeloop.sdk.control_client.ControlClient.publish_version`).
Pure: no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeloop.core.errors import ConflictError, NotFoundError
from edgeloop.core.types import ModelRef

if TYPE_CHECKING:  # the registry package pulls SQLAlchemy; only its value type is named here
    from edgeloop.registry.store import ModelVersion

ALREADY_THERE = "already on the fleet"


def publish_plan(
    version: ModelVersion, parent_sha256: str | None, fleet: list[dict[str, Any]]
) -> str:
    """Whether local ``version`` can go to a control plane listing ``fleet`` (its
    ``/api/v1/models`` rows) and keep its ref: ``"publish"``, or :data:`ALREADY_THERE` when the
    same bytes are there under the same ref. Pure: no I/O.

    Raises:
        ConflictError: another model holds the ref there; the fleet's parent is another model;
            the control plane would number the version differently.
        NotFoundError: the parent is not on the fleet.
    """
    by_ref = {(str(row["name"]), int(row["version"])): str(row["sha256"]) for row in fleet}
    ref = version.ref
    there = by_ref.get((version.name, version.version))
    if there is not None:
        if there == version.artifact_sha256:
            return ALREADY_THERE
        raise ConflictError(
            f"{ref} on the fleet is another model (sha256 {there[:12]}... there, "
            f"{version.artifact_sha256[:12]}... here); nothing was published",
            hint=f"the fleet's {ref} stays; publish this model locally as a new version of "
            f"{version.name!r} and publish that, or deploy the fleet's {ref}",
        )
    parent = version.manifest.parent
    if parent is not None:
        _check_parent(ref, parent, parent_sha256, by_ref)
    versions = sorted(v for name, v in by_ref if name == version.name)
    upcoming = (versions[-1] if versions else 0) + 1
    if upcoming != version.version:
        listed = ", ".join(map(str, versions)) or "none"
        hint = (
            f"publish {version.name}:{upcoming} .. {version.name}:{version.version - 1} first "
            f"(`edgeloop fleet publish {version.name}:{upcoming}`; --with-parents publishes "
            "ancestors), so the numbers line up"
            if upcoming < version.version
            else f"{ref} was removed from the fleet and cannot get its number back; publish "
            "the model locally as a new version and publish that"
        )
        raise ConflictError(
            f"the control plane numbers versions itself and would publish {ref} as "
            f"{version.name}:{upcoming} (its versions of {version.name!r}: {listed}); "
            "nothing was published",
            hint=hint,
        )
    return "publish"


def _check_parent(
    ref: ModelRef, parent: ModelRef, sha256: str | None, by_ref: dict[tuple[str, int], str]
) -> None:
    there = by_ref.get((parent.name, parent.version or 0))
    if there is None:
        raise NotFoundError(
            f"the parent {parent} of {ref} is not on the fleet, so its lineage would break; "
            "nothing was published",
            hint=f"publish the parent first (`edgeloop fleet publish {parent}`), or pass "
            "--with-parents",
        )
    if sha256 is not None and there != sha256:
        raise ConflictError(
            f"the fleet's {parent} (parent of {ref}) is another model than the local {parent} "
            f"(sha256 {there[:12]}... there, {sha256[:12]}... here); nothing was published",
            hint="the two registries diverged: publish the local lineage under new versions",
        )
