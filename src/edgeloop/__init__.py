"""edgeloop: an end-to-end MLOps stack for edge AI.

The package root stays light on purpose: importing ``edgeloop`` must not import torch,
so an edge node that only serves models can install the core alone. The SDK's names
(``from edgeloop import EdgeMLManager``) are imported on first use (PEP 562 ``__getattr__``).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("edgeloop")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "EdgeMLManager": "edgeloop.sdk.manager",
    "OnDeviceTraining": "edgeloop.sdk.manager",
    "EdgeModel": "edgeloop.sdk.models",
    "ModelType": "edgeloop.sdk.models",
    "DeploymentTarget": "edgeloop.sdk.models",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeloop' has no attribute {name!r}")
    return getattr(import_module(module), name)
