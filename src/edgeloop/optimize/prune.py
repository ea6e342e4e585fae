"""Pruning, two ways with two honest benefits.

- ``prune-unstructured`` (:mod:`.prune_unstructured`): zeroed single weights in a dense file;
  the benefit is the compressed (zstd) size, never speed.
- ``prune-structured`` (:mod:`.prune_structured`): whole channels removed; the exported model
  has smaller tensors and does less work, so it is smaller and faster.

Importing this module registers both methods.
"""

from edgeloop.optimize.prune_structured import StructuredPruner
from edgeloop.optimize.prune_unstructured import PruneScope, UnstructuredPruner

__all__ = ["PruneScope", "StructuredPruner", "UnstructuredPruner"]
