"""Fixtures shared by every test: an isolated edgeloop home and tiny real ONNX models."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings
from tests.tiny_models import make_linear_onnx

# Property tests draw the same examples on every run, so CI is reproducible: a counterexample
# shows up on the run that introduces it, not on a later run by chance. To explore further, run
# `pytest --hypothesis-profile=explore` (a fresh random seed each time).
# No per-example deadline: on a loaded 2-core CI machine one slow example is not a failure.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("explore", derandomize=False, max_examples=1000)
settings.load_profile("ci")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh EDGELOOP_HOME for one test, so nothing touches ~/.edgeloop."""
    path = tmp_path / "edgeloop-home"
    monkeypatch.setenv("EDGELOOP_HOME", str(path))
    monkeypatch.delenv("EDGELOOP_DB", raising=False)
    return path


@pytest.fixture
def linear_onnx(tmp_path: Path) -> Path:
    return make_linear_onnx(tmp_path / "linear.onnx")


@pytest.fixture(scope="session")
def retrain_champion(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A tiny trained champion and shifted labelled data in a registry of its own, shared by
    the retraining tests (tests/pipeline/retrain_setup.py); they add to it, never remove."""
    from tests.pipeline.retrain_setup import make_champion

    return make_champion(tmp_path_factory.mktemp("retrain") / "home", epochs=2)


# The longest single tests (minutes each on 2 shared cores) start first: pytest-xdist hands out
# tests in collection order, so collected last they ran alone at the end while the other worker
# sat idle. Only whole one-test modules move (a module's fixtures are still set up once).
FIRST = ("tests/pipeline/test_quickstart.py", "tests/test_readme.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: every other test keeps its order
