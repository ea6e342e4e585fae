"""edgeloop: an end-to-end MLOps stack for edge AI.

The package root stays light on purpose: importing ``edgeloop`` must not import torch,
so an edge node that only serves models can install the core alone.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeloop")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
