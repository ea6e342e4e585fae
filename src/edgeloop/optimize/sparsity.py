"""Sparsity counts and compressed sizes: the honest figures of unstructured pruning.

Zeroed weights do not make a dense ONNX Runtime kernel faster, and a dense file stores a zero in
as many bytes as any other float. What they buy is a file that compresses well for an
over-the-air update or flash storage, so pruning reports the zstd-compressed size of the model
file (Zstandard, RFC 8878) next to its raw size -- both read from the file, never estimated.

No torch here: counts come from the ONNX file's initializers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import ConfigError, NotFoundError, UntrustedArtifactError, require

# zstd level 19 is the strongest of the standard levels (20-22 are "ultra", needing more
# memory to decompress); a model file compresses once and is downloaded many times.
ZSTD_LEVEL = 19
ZSTD_EXTRA = "optimize"


@dataclass(frozen=True, slots=True)
class SparsityCount:
    """How many of ``total`` weight values are exactly zero.

    Raises:
        ConfigError: negative counts or more zeros than values.
    """

    zeros: int
    total: int

    def __post_init__(self) -> None:
        if self.total < 0 or not 0 <= self.zeros <= self.total:
            raise ConfigError(
                f"sparsity count {self.zeros}/{self.total} is not valid; "
                "expected 0 <= zeros <= total"
            )

    @property
    def sparsity(self) -> float:
        """Share of zeros; 0.0 for an empty count."""
        return self.zeros / self.total if self.total else 0.0

    def __add__(self, other: SparsityCount) -> SparsityCount:
        return SparsityCount(self.zeros + other.zeros, self.total + other.total)

    def to_dict(self) -> dict[str, Any]:
        return {"zeros": self.zeros, "total": self.total, "sparsity": self.sparsity}


@dataclass(frozen=True, slots=True)
class CompressedSize:
    """Raw and zstd-compressed bytes of one file at zstd ``level``."""

    raw_bytes: int
    zstd_bytes: int
    level: int

    def __post_init__(self) -> None:
        if self.raw_bytes < 0 or self.zstd_bytes < 1:
            raise ConfigError(
                f"sizes raw={self.raw_bytes}, zstd={self.zstd_bytes} are not valid; "
                "expected raw >= 0 and zstd >= 1"
            )

    @property
    def ratio(self) -> float:
        """raw / compressed: how many times smaller the compressed file is."""
        return self.raw_bytes / self.zstd_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw_bytes": self.raw_bytes,
            "zstd_bytes": self.zstd_bytes,
            "zstd_level": self.level,
            "ratio": self.ratio,
        }


def zstd_size(data: bytes, level: int = ZSTD_LEVEL) -> int:
    """Bytes of ``data`` compressed by zstd at ``level`` (1-22).

    Raises:
        ConfigError: a level outside 1..22.
        MissingDependencyError: the ``zstandard`` package is not installed.
    """
    if not 1 <= level <= 22:
        raise ConfigError(f"zstd level {level} is not valid; expected 1..22")
    zstandard = require("zstandard", ZSTD_EXTRA, "Measuring the compressed model size")
    return len(zstandard.ZstdCompressor(level=level).compress(data))


def compressed_size(path: str | Path, level: int = ZSTD_LEVEL) -> CompressedSize:
    """Raw and zstd-compressed size of the file at ``path``.

    Raises:
        NotFoundError: no such file.
        ConfigError, MissingDependencyError: as :func:`zstd_size`.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(f"model file {str(path)!r} does not exist") from exc
    return CompressedSize(len(data), zstd_size(data, level), level)


def array_sparsity(values: np.ndarray[Any, Any]) -> SparsityCount:
    """Zeros among the entries of one array."""
    return SparsityCount(int(values.size - np.count_nonzero(values)), int(values.size))


def onnx_weight_sparsity(path: str | Path) -> SparsityCount:
    """Zeros among the weight values of an ONNX file: float initializers of rank >= 2.

    Rank >= 2 picks convolution and dense weights; biases and normalisation vectors (rank 1)
    and scalars are not pruned and are left out of the count.

    Raises:
        NotFoundError: no such file.
        UntrustedArtifactError: the file is not an ONNX model.
    """
    import onnx
    from onnx import numpy_helper

    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"model file {str(file)!r} does not exist")
    try:
        model = onnx.load(str(file))
    except Exception as exc:  # onnx raises DecodeError and others for a foreign file
        raise UntrustedArtifactError(f"{str(file)!r} is not an ONNX model: {exc}") from exc
    total = SparsityCount(0, 0)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    for init in model.graph.initializer:
        if init.data_type in floats and len(init.dims) >= 2:
            total = total + array_sparsity(numpy_helper.to_array(init))
    return total
