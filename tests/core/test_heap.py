"""freeze_startup: what is alive is left out of later collections; what comes later is not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from edgeloop.core.heap import freeze_startup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_objects_alive_at_the_freeze_are_not_scanned_later_ones_are(unfrozen: None) -> None:
    before = _Node()
    frozen = freeze_startup()
    assert frozen == gc.get_freeze_count() > 1_000  # pytest and its plugins alone are more
    assert not any(o is before for o in gc.get_objects())  # out of every generation
    after = _Node()
    gone = weakref.ref(after)
    del after
    gc.collect()
    assert gone() is None  # a cycle made after the freeze is still collected
