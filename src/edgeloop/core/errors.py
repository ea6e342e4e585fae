"""The one error tree of edgeloop.

Everything raised on purpose derives from :class:`EdgeError`. Classes are split by who must
act (the user's configuration, the user's data, an untrusted artifact, a converter, ...). Each
carries the process exit code the CLI uses and the HTTP status the servers answer with, so the
mapping lives here and nowhere else.

A message names the bad value and what was expected; ``hint`` says what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar


class EdgeError(Exception):
    """Base of every error edgeloop raises on purpose."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON body servers answer with and ``--format json`` prints."""
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class ConfigError(EdgeError):
    """A flag, setting, reference or argument the user gave is invalid."""

    exit_code = 2
    http_status = 400


class DataError(EdgeError):
    """Input data is malformed: ragged rows, missing or NaN labels, an empty folder."""

    exit_code = 3
    http_status = 422


class NotFoundError(EdgeError):
    """A model, version, data set, artifact or file does not exist."""

    exit_code = 4
    http_status = 404


class ConflictError(EdgeError):
    """The request contradicts stored state (a version that already exists, ...)."""

    exit_code = 5
    http_status = 409


class UntrustedArtifactError(EdgeError):
    """A model file or artifact failed a safety check (size, paths, hashes, signatures)."""

    exit_code = 6
    http_status = 422


class ConversionError(EdgeError):
    """Exporting or converting a model failed."""

    exit_code = 7
    http_status = 422


class ParityError(ConversionError):
    """A converted model's outputs differ from its parent's beyond the tolerance."""

    exit_code = 8

    def __init__(
        self,
        message: str,
        *,
        max_abs_diff: float,
        top1_agreement: float | None,
        tolerance: float,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.max_abs_diff = max_abs_diff
        self.top1_agreement = top1_agreement
        self.tolerance = tolerance

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body.update(
            max_abs_diff=self.max_abs_diff,
            top1_agreement=self.top1_agreement,
            tolerance=self.tolerance,
        )
        return body


class MissingDependencyError(EdgeError):
    """An optional extra is needed for this step and is not installed."""

    exit_code = 9
    http_status = 501

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package {module!r}, which is not installed",
            hint=f"pip install 'edgeloop[{extra}]'",
        )
        self.module = module
        self.extra = extra


class StoreError(EdgeError):
    """The registry database or artifact store failed or is unreachable."""

    exit_code = 10
    http_status = 503


class TransportError(EdgeError):
    """A remote peer (control plane, node, parent tier) could not be reached or answered badly."""

    exit_code = 11
    http_status = 502


class OverloadError(EdgeError):
    """The server's bounded queue is full; retry later."""

    exit_code = 12
    http_status = 429


def require(module: str, extra: str, purpose: str) -> Any:
    """Import an optional module, or raise :class:`MissingDependencyError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra, purpose) from exc
