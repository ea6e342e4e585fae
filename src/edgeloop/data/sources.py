"""What every user-file loader shares: the path check and arrays + labels -> ``Dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import DataError, NotFoundError
from edgeloop.data.classes import Label, encode_labels
from edgeloop.data.dataset import Dataset, Modality

# A sample with this many axes is tabular (features,), a signal (channels, time), an image.
_MODALITY_BY_NDIM = {1: Modality.TABULAR, 2: Modality.SIGNAL, 3: Modality.IMAGE}


def existing_file(path: Path | str) -> Path:
    """``path`` as a Path to an existing file.

    Raises:
        NotFoundError: nothing exists there.
        DataError: it is a folder.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise NotFoundError(f"{p} does not exist", hint="check the path")
    if not p.is_file():
        raise DataError(f"{p} is a folder; expected a file")
    return p


def modality_of(sample_shape: tuple[int, ...], where: str) -> Modality:
    """The modality a sample shape implies (see :class:`Modality`).

    Raises:
        DataError: the shape has no, or more than three, axes.
    """
    modality = _MODALITY_BY_NDIM.get(len(sample_shape))
    if modality is None:
        raise DataError(
            f"{where}: one sample has shape {sample_shape}; expected (features,), "
            "(channels, time) or (channels, height, width)"
        )
    return modality


def file_dataset(
    path: Path, x: npt.NDArray[np.float32], labels: list[Label], description: str
) -> Dataset:
    """A data set named after the file, labels mapped by :func:`encode_labels`."""
    y, classes = encode_labels(labels)
    return Dataset(
        name=path.stem,
        x=x,
        y=y,
        classes=classes,
        modality=modality_of(tuple(x.shape[1:]), str(path)),
        source=str(path),
        description=description,
    )
