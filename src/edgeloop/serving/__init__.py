"""The inference server: Open Inference Protocol v2, ``/predict``, ``/metrics``, A/B, hot swap.

``edgeloop serve MODEL...`` runs :func:`create_app` over a :class:`Catalog` under uvicorn. Nothing
in this package imports torch: it runs on an edge node's small install (the ``serve`` extra).
"""

from edgeloop.serving.app import create_app
from edgeloop.serving.catalog import Catalog, SwapReport
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.repository import ModelSource, Origin, scan
from edgeloop.serving.routing import Routing, Split

__all__ = [
    "Catalog",
    "ModelSource",
    "Origin",
    "Routing",
    "ServerConfig",
    "Split",
    "SwapReport",
    "create_app",
    "scan",
]
