"""kill -9 of a real agent process at each updater state boundary (the pause hook), then a
restart: the node ends serving a valid model, old or new as the state decides, and the
restarted agent's self-test of its active slot passes. bench/agent_kills.py runs >= 20 per
boundary and >= 100 at random moments; ``make test`` runs one per boundary."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.agent.kill_cycle import EXPECTED, cycle


@pytest.mark.parametrize("state", list(EXPECTED))
def test_kill_at_boundary_ends_on_a_valid_model(
    tmp_path: Path, models: dict[int, Path], state: str
) -> None:
    result = cycle(tmp_path, models, pause_at=state)
    assert result.killed_in == state
    assert result.served == EXPECTED[state]
    assert result.self_test_passed
    assert result.outcome == ("committed" if EXPECTED[state] == 2 else "rolled_back")
