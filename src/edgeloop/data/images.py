"""Image folders: one sub-folder per class, read with Pillow (imported only when used)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.data.dataset import Dataset, Modality

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)


def load_image_folder(
    path: Path | str, size: tuple[int, int] | None = None, grayscale: bool = True
) -> Dataset:
    """Load ``path/<class>/<image>``: x is (n, 1 or 3, height, width) in [0, 1].

    Classes are the sub-folder names, numeric names in numeric order (``2`` before ``10``),
    others alphabetically; files with other suffixes (a README) are skipped. ``size`` is
    (width, height) as in Pillow; without it every image must already share one size.
    8-bit images are assumed (values / 255).

    Raises:
        NotFoundError: ``path`` does not exist.
        ConfigError: ``size`` is not two positive integers.
        DataError: no class folders, a class folder without images, an unreadable image, or
            images of different sizes without ``size`` (the message names the folder / file).
    """
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"image folder {root} does not exist", hint="check the path")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ConfigError(f"image size {size!r} is not valid; expected (width, height) >= 1")
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_class_order
    )
    if not folders:
        raise DataError(
            f"{root} has no class folders",
            hint=f"put the images in one sub-folder per class, e.g. {root / 'cat' / '001.png'}",
        )
    images: list[npt.NDArray[np.float32]] = []
    labels: list[int] = []
    read: list[Path] = []
    for label, folder in enumerate(folders):
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"class folder {folder} (class {folder.name!r}) holds no images",
                hint=f"add images ({', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder",
            )
        for file in files:
            images.append(_read_image(file, size, grayscale))
            labels.append(label)
            read.append(file)
    _check_same_shape(images, read)
    return Dataset(
        name=root.name,
        x=np.stack(images),
        y=np.asarray(labels, dtype=np.int64),
        classes=tuple(f.name for f in folders),
        modality=Modality.IMAGE,
        source=str(root),
        description=f"image folder, {'grey' if grayscale else 'RGB'}, one sub-folder per class",
    )


def _class_order(folder: Path) -> tuple[int, int, str]:
    name = folder.name
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _read_image(
    file: Path, size: tuple[int, int] | None, grayscale: bool
) -> npt.NDArray[np.float32]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            converted = img.convert("L" if grayscale else "RGB")
            if size is not None:
                converted = converted.resize(size, Image.Resampling.BICUBIC)
            pixels = np.asarray(converted, dtype=np.float32) / np.float32(255.0)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{file} cannot be read as an image ({exc})", hint="replace or remove the file"
        ) from exc
    return pixels[None] if grayscale else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _check_same_shape(images: list[npt.NDArray[np.float32]], files: list[Path]) -> None:
    first = images[0].shape
    for img, file in zip(images, files, strict=True):
        if img.shape != first:
            raise DataError(
                f"{file} is {img.shape[2]}x{img.shape[1]} pixels but {files[0]} is "
                f"{first[2]}x{first[1]}",
                hint="resize the images to one size, or call "
                "load_image_folder(path, size=(width, height))",
            )
