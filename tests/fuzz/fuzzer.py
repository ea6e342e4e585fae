"""Schemathesis against a running server's own OpenAPI document, counting every answer.

For each operation of the document, Hypothesis draws cases from schemathesis' strategies: bodies,
queries, headers and path parameters that fit the schema (positive) and that break it (negative);
where the target names real path parameters (a served model), a share of the cases use them, so
requests get past "no such model" into decoding and inference. Every answer is checked:

- ``not_a_server_error``: no 5xx, ever (issue 17's goal);
- ``status_code_conformance``: the status is one the document lists for the operation;
- ``content_type_conformance``: the answer's media type is one it documents.

Nothing is shrunk or replayed from a database (``phases=[generate]``): a run is ``examples``
requests per operation in a bounded time; a failure is kept with the request that caused it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.fuzz.servers import Target

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
TIMEOUT_S = 30
KEEP = 20  # failures kept with their request
JSON = "application/json"


@dataclass
class Tally:
    """What one run sent and got back."""

    target: str
    sent: int = 0
    by_class: Counter[str] = field(default_factory=Counter)  # "2xx" -> count
    by_status: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)  # check failures, first KEEP
    failure_count: int = 0
    operations: int = 0
    seconds: float = 0.0

    def record(self, status: int) -> None:
        self.sent += 1
        self.by_status[status] += 1
        self.by_class[f"{status // 100}xx"] += 1
        self.server_errors += status >= 500

    def fail(self, message: str) -> None:
        self.failure_count += 1
        if len(self.failures) < KEEP:
            self.failures.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "operations": self.operations, "requests": self.sent,
            "by_class": dict(sorted(self.by_class.items())),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "server_errors": self.server_errors, "check_failures": self.failure_count,
            "seconds": round(self.seconds, 2),
        }  # fmt: skip


def operation_count(target: Target) -> int:
    """How many operations ``target``'s document holds (the fuzzer skips the document's own)."""
    schema = schemathesis.openapi.from_url(f"{target.url}{target.doc_path}", headers=target.headers)
    return sum(1 for _ in schema.get_all_operations())


def fuzz(target: Target, examples: int, run_seed: int = 0) -> Tally:
    """``examples`` cases per operation of ``target``'s document, each sent and checked."""
    schema = schemathesis.openapi.from_url(f"{target.url}{target.doc_path}", headers=target.headers)
    # Every request carries the target's credential: cases without one would be 401s that the
    # control plane's per-source limit turns into 429s for everything after (throttle.py).
    schema.config.generation.update(with_security_parameters=False)
    session = requests.Session()
    session.headers.update(target.headers)
    tally = Tally(target.name)
    started = time.perf_counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        tally.operations += 1
        _fuzz_operation(operation, _strategy(operation, target), target, session, tally,
                        examples, run_seed)  # fmt: skip
    tally.seconds = time.perf_counter() - started
    session.close()
    return tally


def _strategy(operation: Any, target: Target) -> st.SearchStrategy[Any]:
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    strategies = [operation.as_strategy(generation_mode=mode) for mode in modes]
    names = {p.name for p in operation.path_parameters}
    if names and names <= target.pinned.keys() and operation.label not in target.unpinned:
        real = {name: target.pinned[name] for name in names}
        pinned = [operation.as_strategy(generation_mode=m, path_parameters=real) for m in modes]
        strategies += pinned * 2  # twice as likely: a random name mostly ends at 404
        if operation.label in target.bodies:  # the rest of the request still varies
            body = target.bodies[operation.label]
            strategies.append(
                operation.as_strategy(path_parameters=real, body=body, media_type=JSON)
            )
    return st.one_of(strategies)


def _fuzz_operation(
    operation: Any,
    strategy: st.SearchStrategy[Any],
    target: Target,
    session: requests.Session,
    tally: Tally,
    examples: int,
    run_seed: int,
) -> None:
    @seed(run_seed)
    @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=strategy)
    def run(case: Any) -> None:
        try:
            response = case.call(
                base_url=target.url, session=session, headers=target.headers, timeout=TIMEOUT_S
            )
        except requests.RequestException as exc:  # no answer at all: the server may be down
            tally.record(599)
            tally.fail(f"{operation.label}: no answer ({exc!r:.200})\n{case.as_curl_command()}")
            return
        tally.record(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS, headers=target.headers)
        except FailureGroup as exc:
            tally.fail(f"{operation.label}: {exc.message[:1500]}")

    run()
