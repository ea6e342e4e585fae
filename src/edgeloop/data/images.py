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
    changed = {"mode": 0, "size": 0}  # images whose colour mode / size loading converted
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
            images.append(_read_image(file, size, grayscale, changed))
            labels.append(label)
            read.append(file)
    _check_same_shape(images, read)
    return Dataset(
        notes=_notes(changed, len(images), size, grayscale),
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


def _notes(
    changed: dict[str, int], total: int, size: tuple[int, int] | None, grayscale: bool
) -> tuple[str, ...]:
    """What loading converted, in words: a silent colour or size change misleads a user."""
    notes = []
    if changed["mode"]:
        target = "grey (one channel)" if grayscale else "RGB (three channels)"
        advice = "pass --color rgb to keep colour" if grayscale else "--color grey for one"
        notes.append(f"{changed['mode']} of {total} images were converted to {target}; {advice}")
    if changed["size"] and size is not None:
        notes.append(
            f"{changed['size']} of {total} images were resized to {size[0]}x{size[1]} (bicubic)"
        )
    return tuple(notes)


def _read_image(
    file: Path, size: tuple[int, int] | None, grayscale: bool, changed: dict[str, int]
) -> npt.NDArray[np.float32]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            mode = "L" if grayscale else "RGB"
            changed["mode"] += img.mode != mode
            converted = img.convert(mode)
            if size is not None and converted.size != size:
                changed["size"] += 1
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
                hint="resize the images to one size, or pass --image-size WIDTHxHEIGHT "
                "(load_image_folder(path, size=(width, height)) in Python)",
            )
