"""Schemathesis against both OpenAPI documents, on real server processes (issue 17): no 5xx, and
every status and media type one the document lists. Bounded for ``make test``: a few cases per
operation (the long run is bench/fuzz_bench.py, figures in docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

from tests.fuzz.fuzzer import fuzz
from tests.fuzz.servers import control_target, serve_target

EXAMPLES = 15  # per operation: ~260 requests to serve, ~450 to control; ~10-15 s CPU each


def test_the_inference_server_answers_no_5xx_and_only_what_its_document_lists(
    tmp_path: Path,
) -> None:
    with serve_target(tmp_path) as target:
        tally = fuzz(target, EXAMPLES)
        assert target.alive()
    assert tally.operations == 23 and tally.sent >= 200, tally.to_dict()
    assert tally.by_class["2xx"] > 0 and tally.by_class["4xx"] > 0, tally.to_dict()
    assert tally.server_errors == 0 and not tally.failures, "\n\n".join(tally.failures)


def test_the_control_plane_answers_no_5xx_and_only_what_its_document_lists(
    tmp_path: Path,
) -> None:
    with control_target(tmp_path) as target:
        tally = fuzz(target, EXAMPLES)
        assert target.alive()
    assert tally.operations >= 24 and tally.sent >= 200, tally.to_dict()
    assert tally.by_class["2xx"] > 0 and tally.by_class["4xx"] > 0, tally.to_dict()
    assert tally.server_errors == 0 and not tally.failures, "\n\n".join(tally.failures)
