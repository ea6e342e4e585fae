"""The bodies the control plane's routes take: one strict pydantic model per route.

Strict types at the HTTP edge (docs/fleet-protocol.md is the contract): a boolean is not a
number, a number is not a string, every integer and time has a range that fits the database and
makes sense, every string a length; an admin body with an unknown key is refused (a typo would
otherwise be ignored silently), a node's body may carry keys newer agents add. A body that does
not fit is answered 400 naming each bad field (:func:`parse`), before anything is stored.

Before these, ``tier: 9223372036854775808`` answered 500, ``ttl_s: true`` made a 1-second token,
``soak_s: 1e308`` started a real rollout, an ``agent_url`` object answered 503 showing the
database path and ``agent_url: "javascript:..."`` was stored (issue 17).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticError

from edgeloop.serving.errors import BadRequestError

M = TypeVar("M", bound=BaseModel)
DAY_S = 86400
MAX_TIER = 1000
MAX_REVISION = 2**53  # exact in a JSON number read as a double, and in a signed 64-bit column
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # node names, parents, deployment names
REF = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(:([1-9][0-9]{0,8}|latest))?$"  # name[:version]
LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
WAVE = r"^[1-9][0-9]{0,5}%?$"
SHA256 = r"^[0-9a-f]{64}$"
VERSION = r"^[1-9][0-9]{0,8}$"  # a model version, as REF's (a form field is text)
MANIFEST_CHARS = 1 << 20


def _finite(low: float, high: float) -> Any:
    return Field(ge=low, le=high, allow_inf_nan=False)


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return text


Name = Annotated[str, StringConstraints(pattern=NAME)]
Ref = Annotated[str, StringConstraints(pattern=REF)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Tier = Annotated[int, Field(ge=0, le=MAX_TIER)]
Revision = Annotated[int, Field(ge=0, le=MAX_REVISION)]
Count = Annotated[int, Field(ge=0, le=MAX_REVISION)]
Text = Annotated[str, StringConstraints(max_length=4096)]
Url = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)]
LabelValue = (
    Annotated[str, StringConstraints(max_length=256)]
    | int
    | Annotated[float, _finite(-1e300, 1e300)]
)
Labels = Annotated[
    dict[Annotated[str, StringConstraints(pattern=LABEL_KEY)], LabelValue], Field(max_length=64)
]
Doc = Annotated[dict[Annotated[str, StringConstraints(max_length=128)], Any], Field(max_length=256)]


class _Admin(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _FromNode(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class EnrollmentTokenBody(_Admin):
    """``POST /api/v1/enrollment-tokens``."""

    labels: Labels | None = None
    tier: Tier | None = None
    parent: Name | None = None
    ttl_s: Annotated[int, Field(ge=1, le=30 * DAY_S)] = 3600


class NodePatchBody(_Admin):
    """``PATCH /api/v1/nodes/{id}``: only the keys sent are changed."""

    labels: Labels | None = None
    tier: Tier | None = None
    parent: Name | None = None


class EnrollBody(_FromNode):
    """``POST /api/v1/enroll`` (the enrollment token is checked by the route: 401, not 400)."""

    enrollment_token: Token | None = None
    name: Name
    capabilities: Doc | None = None
    agent_url: Url | None = None


class UpdaterReport(_FromNode):
    state: Annotated[str, StringConstraints(max_length=64)] | None = None
    target_revision: Revision | None = None
    error: Text | None = None
    outcome: Annotated[str, StringConstraints(max_length=64)] | None = None
    failed_revision: Revision | None = None


class ActiveReport(_FromNode):
    name: Annotated[str, StringConstraints(max_length=128)] | None = None
    version: Revision | None = None
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None


class SelfTestReport(_FromNode):
    passed: bool | None = None


class HealthReport(_FromNode):
    window_s: Annotated[float, _finite(0, 365 * DAY_S)] | None = None
    requests: Count | None = None
    errors: Count | None = None
    error_rate: Annotated[float, _finite(0, 1)] | None = None
    p99_ms: Annotated[float, _finite(0, 1e9)] | None = None


class KindBacklog(_FromNode):
    rows: Count
    bytes: Annotated[int, Field(ge=0, le=2**53)]
    oldest_age_s: Annotated[float, _finite(0, 1e10)] | None = None


class OutboxReport(KindBacklog):
    """What waits in the node's telemetry outbox (the fleet and node pages show it)."""

    kinds: Annotated[
        dict[Annotated[str, StringConstraints(max_length=16)], KindBacklog], Field(max_length=16)
    ] = {}


class ReportBody(_FromNode):
    """``POST /api/v1/nodes/{id}/report``: the fields the health guard reads are checked."""

    revision: Revision
    updater: UpdaterReport | None = None
    active: ActiveReport | None = None
    previous: Doc | None = None
    self_test: SelfTestReport | None = None
    health: HealthReport | None = None
    events: Annotated[list[Doc], Field(max_length=1000)] | None = None
    outbox: OutboxReport | None = None


class GuardBody(_Admin):
    require_self_test: bool = True
    max_error_rate: Annotated[float, _finite(0, 1)] | None = None
    max_p99_ms: Annotated[float, _finite(0, 1e7)] | None = None
    min_requests: Annotated[int, Field(ge=0, le=10**9)] = 0
    required_requests: Annotated[int, Field(ge=0, le=10**9)] = 0


class PlanBody(_Admin):
    waves: Annotated[
        list[Annotated[str, StringConstraints(pattern=WAVE)]], Field(min_length=1, max_length=100)
    ] = ["100%"]
    soak_s: Annotated[float, _finite(0, 7 * DAY_S)] = 30.0
    watch_s: Annotated[float, _finite(0, DAY_S)] = 30.0
    wave_timeout_s: Annotated[float, _finite(0, 7 * DAY_S)] = 600.0
    guard: GuardBody | None = None


class SelectorBody(_Admin):
    labels: Labels | None = None


class DeploymentBody(_Admin):
    """``POST /api/v1/deployments`` (then :meth:`DeploymentSpec.from_dict`)."""

    name: Name
    model: Ref
    selector: SelectorBody | None = None
    variants: (
        Annotated[dict[Annotated[str, StringConstraints(max_length=64)], Ref], Field(max_length=64)]
        | None
    ) = None
    serving: Doc | None = None
    plan: PlanBody | None = None
    # replace a deployed model whose inputs/outputs differ (its clients break): 409 otherwise
    force_spec_change: bool = False


class RollbackBody(_Admin):
    """``POST /api/v1/rollouts/{id}/rollback``."""

    to: Ref | None = None


class ModelUpload(_Admin):
    """The text fields of ``POST /api/v1/models`` (multipart form data); its files are
    ``file`` (the artifact) and, optionally, ``profile`` (the reference profile)."""

    manifest: Annotated[str, StringConstraints(min_length=2, max_length=MANIFEST_CHARS)]
    version: Annotated[str, StringConstraints(pattern=VERSION)] | None = None
    sha256: Annotated[str, StringConstraints(pattern=SHA256)] | None = None


def parse_form(model: type[M], fields: dict[str, Any]) -> M:
    """A form's text ``fields`` as a ``model``. Raises BadRequestError as :func:`parse`."""
    try:
        return model.model_validate(fields)
    except PydanticError as exc:
        raise BadRequestError(_message(model, exc), hint=_hint(model)) from None


def parse(model: type[M], raw: bytes) -> M:
    """``raw`` (JSON; empty: ``{}``) as a ``model``.

    Raises:
        BadRequestError: not JSON, not an object, or a field of the wrong type or range; the
            message names every bad field and what it expected.
    """
    try:
        return model.model_validate_json(raw or b"{}")
    except PydanticError as exc:
        raise BadRequestError(_message(model, exc), hint=_hint(model)) from None


def _message(model: type[BaseModel], exc: PydanticError) -> str:
    problems = []
    for error in exc.errors(include_url=False)[:10]:
        where = ".".join(_short(part, 40) for part in error["loc"]) or "the body"
        if error["type"] == "json_invalid":
            problems.append(f"the body is not JSON ({error['msg']})")
        elif error["type"] == "model_type":
            problems.append("the body is not a JSON object")
        elif error["type"] == "missing":
            problems.append(f"{where} is missing")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{where} is not a known field")
        else:
            got = _short(_shown(error["input"]), 60)
            problems.append(f"{where}: {error['msg']} (got {got})")
    more = exc.error_count() - len(problems)
    tail = f"; and {more} more" if more > 0 else ""
    return f"{model.__name__} is not valid: " + "; ".join(problems) + tail


def _shown(value: Any) -> str:
    """``value`` as JSON text (an integer past 64 bits, which orjson refuses: as digits)."""
    try:
        return orjson.dumps(value, default=repr).decode()
    except TypeError:
        return repr(value)


def _short(part: Any, most: int) -> str:
    text = str(part)
    return text if len(text) <= most else text[: most - 3] + "..."


def _hint(model: type[BaseModel]) -> str:
    fields = ", ".join(model.model_fields)
    return f"send a JSON object with {fields} (docs/fleet-protocol.md)"
