"""The control plane's error answers as the EdgeError their ``type`` (or status) names."""

from __future__ import annotations

import httpx

from edgeloop.core.errors import (
    ConfigError,
    ConflictError,
    DataError,
    EdgeError,
    NotFoundError,
    StoreError,
    TransportError,
    UntrustedArtifactError,
)

_ERRORS: dict[str, type[EdgeError]] = {
    cls.__name__: cls
    for cls in (
        ConfigError,
        DataError,
        NotFoundError,
        ConflictError,
        UntrustedArtifactError,
        StoreError,
    )
}
_BY_STATUS: dict[int, type[EdgeError]] = {
    400: ConfigError,
    404: NotFoundError,
    409: ConflictError,
    422: DataError,
    503: StoreError,
}


def answer_error(response: httpx.Response, what: str) -> EdgeError:
    """The error an answer of status >= 400 to ``what`` stands for (401/403: ConfigError,
    naming the refusal; a body that is not an error body: TransportError)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict) or "error" not in body:
        return TransportError(
            f"{what} answered {response.status_code}: {response.text[:200]}",
            hint="is that URL an edgeloop control plane?",
        )
    message, hint = str(body["error"]), body.get("hint")
    cls = _ERRORS.get(str(body.get("type")))
    if cls is None:
        cls = _BY_STATUS.get(response.status_code, TransportError)
    if response.status_code in (401, 403):
        cls = ConfigError
        message = f"{what} was refused ({response.status_code}): {message}"
    return cls(message, hint=hint)
