"""The model registry: versioned manifests in a database, their bytes content-addressed on disk.

``Registry.open()`` is the entry point; ``ModelStore`` and ``ArtifactStore`` are the two
swappable backends under it (SQLite/PostgreSQL and a local folder; in-memory for tests).
"""

from edgeloop.registry.artifacts import ArtifactInfo, ArtifactStore, LocalArtifactStore
from edgeloop.registry.memory_store import MemoryModelStore
from edgeloop.registry.registry import Registry
from edgeloop.registry.sql_store import SqlModelStore
from edgeloop.registry.store import ModelStore, ModelVersion

__all__ = [
    "ArtifactInfo",
    "ArtifactStore",
    "LocalArtifactStore",
    "MemoryModelStore",
    "ModelStore",
    "ModelVersion",
    "Registry",
    "SqlModelStore",
]
