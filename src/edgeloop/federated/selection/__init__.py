"""Client selection strategies (issue 14 part 4), registered by name in :data:`SELECTORS`."""

from __future__ import annotations

from edgeloop.federated.selection.base import (
    SELECTORS,
    Candidate,
    Decision,
    PowerSource,
    Selection,
    Selector,
    Why,
)
from edgeloop.federated.selection.fairness import FairnessSelector
from edgeloop.federated.selection.power_of_choice import (
    PowerOfChoiceSelector,
    candidate_set,
    highest_loss,
)
from edgeloop.federated.selection.resource import ResourceAwareSelector
from edgeloop.federated.selection.uniform import UniformSelector

__all__ = [
    "SELECTORS",
    "Candidate",
    "Decision",
    "FairnessSelector",
    "PowerOfChoiceSelector",
    "PowerSource",
    "ResourceAwareSelector",
    "Selection",
    "Selector",
    "UniformSelector",
    "Why",
    "candidate_set",
    "highest_loss",
]
