"""The model registry's routes: the listing and the multipart publish (registered in
:mod:`edgeloop.control.app`).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from edgeloop.control import schemas
from edgeloop.control.answers import json_answer
from edgeloop.core.errors import ConflictError, EdgeError, NotFoundError, UntrustedArtifactError
from edgeloop.core.types import Manifest, ModelRef
from edgeloop.serving.errors import BadRequestError, PayloadTooLargeError

if TYPE_CHECKING:
    from edgeloop.control.api import Api


class ModelRoutes:
    """The routes over one :class:`~edgeloop.control.api.Api` (its plane and admin check)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.plane = api.plane

    async def models(self, request: Request) -> Response:
        await self.api.admin(request)
        versions = await run_in_threadpool(self.plane.registry.list)
        return json_answer({"models": [_model_row(v) for v in versions]})

    async def publish_model(self, request: Request) -> Response:
        await self.api.admin(request)
        try:
            form = await request.form()
        except EdgeError:  # over the cap, or too slow (BodyLimits)
            raise
        except Exception as exc:  # a malformed multipart body
            raise BadRequestError(f"the body is not multipart form data: {exc}") from exc
        try:
            upload, profile = form.get("file"), form.get("profile")
            texts = {k: v for k, v in form.multi_items() if k not in _UPLOAD_FILES}
            if (
                not isinstance(upload, UploadFile)
                or not isinstance(profile, UploadFile | None)
                or not all(isinstance(v, str) for v in texts.values())
                or len(form.multi_items()) != len(set(form.keys()))
            ):
                raise BadRequestError(
                    "POST /api/v1/models needs the multipart file 'file' (the artifact), the "
                    "field 'manifest' (JSON), optionally the file 'profile' (its reference "
                    "profile) and the fields 'version' and 'sha256', each once",
                    hint="the SDK's ControlClient.publish_model(file, manifest) sends them",
                )
            fields = schemas.parse_form(schemas.ModelUpload, texts)
            try:
                manifest = Manifest.from_dict(orjson.loads(fields.manifest))
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
                # AttributeError: JSON of another shape (null, a list) where an object belongs
                raise BadRequestError(f"the manifest field is not a valid manifest: {exc}") from exc
            # The upload is spooled to disk by the form parser; copied, never held in memory.
            extra = None if profile is None else profile.file
            record, status = await run_in_threadpool(
                self._publish, upload.file, extra, manifest, fields
            )
        finally:
            await form.close()
        return json_answer(record, status)

    def _publish(
        self,
        upload: BinaryIO,
        profile: BinaryIO | None,
        manifest: Manifest,
        fields: schemas.ModelUpload,
    ) -> tuple[dict[str, Any], int]:
        """The version's record and 201; or 200 with the record already there when the
        requested ``name:version`` holds these very bytes (a retried publish).

        Raises:
            UntrustedArtifactError: the bytes do not hash to the ``sha256`` field (422).
            ConflictError: the requested version holds another model (409).
            PayloadTooLargeError: a profile over ``PROFILE_BYTES`` (413).
        """
        with tempfile.TemporaryDirectory(prefix="edgeloop-upload-") as tmp:
            path = Path(tmp) / f"upload.{manifest.format}"
            upload.seek(0)
            digest = hashlib.sha256()
            with path.open("wb") as out:
                while chunk := upload.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            sha = digest.hexdigest()
            if fields.sha256 is not None and fields.sha256 != sha:
                raise UntrustedArtifactError(
                    f"the uploaded file hashes to sha256 {sha}, not the {fields.sha256} the "
                    "'sha256' field names; nothing was published",
                    hint="the file changed on the way; publish it again",
                )
            version = None if fields.version is None else int(fields.version)
            if version is not None and (held := self._held(manifest.name, version)) is not None:
                if held.artifact_sha256 == sha:
                    return dict(held.to_dict()), 200
                raise ConflictError(
                    f"{manifest.name}:{version} is taken by another model (sha256 "
                    f"{held.artifact_sha256} there, {sha} uploaded); nothing was published",
                    hint="publish it as a new version (leave out 'version' for the next one)",
                )
            data = None if profile is None else _profile_bytes(profile)
            published = self.plane.registry.publish(path, manifest, version=version, profile=data)
            return dict(published.to_dict()), 201

    def _held(self, name: str, version: int) -> Any:
        """The registry's ``name:version``, or None when there is none."""
        try:
            return self.plane.registry.show(ModelRef(name, version))
        except NotFoundError:
            return None


_UPLOAD_FILES = ("file", "profile")


def _profile_bytes(profile: BinaryIO) -> bytes:
    """The uploaded profile's bytes, at most ``PROFILE_BYTES`` (a profile is small by design)."""
    from edgeloop.control.limits import PROFILE_BYTES

    profile.seek(0)
    data = profile.read(PROFILE_BYTES + 1)
    if len(data) > PROFILE_BYTES:
        raise PayloadTooLargeError(
            f"the 'profile' file is over {PROFILE_BYTES} bytes; a reference profile is far "
            "smaller (docs/monitoring.md)",
            hint="upload the profile `edgeloop registry profile NAME:VERSION --out FILE` wrote",
        )
    return data


def _model_row(version: Any) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "ref": str(version.ref),
        "sha256": version.artifact_sha256,
        "size_bytes": version.size_bytes,
        "format": version.manifest.format,
        "created_at": version.created_at.isoformat(),
        "manifest": version.manifest.to_dict(),  # measurements, data set, recipe (the SDK)
    }
