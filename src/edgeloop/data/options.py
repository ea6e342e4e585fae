"""How to read a user's data file: the loaders' options, as one value the CLI and SDK share.

Every field left None means the loader's default (CSV label column ``label``, JSONL keys
``features`` / ``label``, images made grey at their own size). A field set for a file kind it
does not apply to is refused rather than ignored, so a typo'd flag never passes silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from edgeloop.core.errors import ConfigError


class ColorMode(StrEnum):
    """What an image folder's pixels become: one grey channel, or three RGB channels."""

    GREY = "grey"
    RGB = "rgb"


# Field -> the CLI flag that sets it (messages name the flag a user typed).
FLAGS = {
    "label_column": "--label-column",
    "features_key": "--features-key",
    "label_key": "--label-key",
    "color": "--color",
    "image_size": "--image-size",
}
# File kind -> the fields that apply to it.
APPLIES = {
    "csv": ("label_column",),
    "jsonl": ("features_key", "label_key"),
    "images": ("color", "image_size"),
}


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """Options for :func:`edgeloop.data.load_data`; None everywhere means the defaults.

    Raises:
        ConfigError: an empty column / key name, or an image size that is not two positive
            integers.
    """

    label_column: str | None = None
    features_key: str | None = None
    label_key: str | None = None
    color: ColorMode | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for name in ("label_column", "features_key", "label_key"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{FLAGS[name]} is empty", hint="name a column / key")
        if self.color is not None and not isinstance(self.color, ColorMode):
            raise ConfigError(f"--color {self.color!r} is not one of grey, rgb")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(
                f"--image-size {self.image_size!r} is not valid; expected WIDTHxHEIGHT >= 1"
            )

    @property
    def given(self) -> tuple[str, ...]:
        """The fields that were set (not None)."""
        return tuple(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def check_applies(self, kind: str, what: str) -> None:
        """Refuse options that do not apply to ``kind`` (``csv``, ``jsonl``, ``images``, or any
        other kind, which takes none); ``what`` names the data in the message.

        Raises:
            ConfigError: naming the flags and the kinds they apply to.
        """
        extra = [name for name in self.given if name not in APPLIES.get(kind, ())]
        if extra:
            flags = ", ".join(FLAGS[name] for name in extra)
            kinds = "; ".join(
                f"{', '.join(FLAGS[n] for n in names)} for {k}" for k, names in APPLIES.items()
            )
            raise ConfigError(
                f"{flags} does not apply to {what}",
                hint=f"these options apply to user files only: {kinds} (a folder of images)",
            )

    def to_dict(self) -> dict[str, Any]:
        """The options that were set, JSON-ready (a checkpoint records them)."""
        out: dict[str, Any] = {}
        for name in self.given:
            value = getattr(self, name)
            out[name] = list(value) if name == "image_size" else str(value)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadOptions:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: an unknown key or an invalid value.
        """
        unknown = sorted(set(d) - set(FLAGS))
        if unknown:
            raise ConfigError(f"unknown data options {unknown}; known: {sorted(FLAGS)}")
        size = d.get("image_size")
        color = d.get("color")
        return cls(
            label_column=d.get("label_column"),
            features_key=d.get("features_key"),
            label_key=d.get("label_key"),
            color=None if color is None else parse_color(str(color)),
            image_size=None if size is None else (int(size[0]), int(size[1])),
        )


def parse_color(text: str) -> ColorMode:
    """``grey`` / ``gray`` / ``rgb`` -> :class:`ColorMode`.

    Raises:
        ConfigError: any other text.
    """
    value = text.strip().lower()
    if value == "gray":
        value = "grey"
    try:
        return ColorMode(value)
    except ValueError:
        raise ConfigError(
            f"--color {text!r} is not one of grey, rgb",
            hint="--color rgb keeps an image's three channels; grey (the default) makes one",
        ) from None


def parse_size(text: str) -> tuple[int, int]:
    """``32x24`` (width x height, as Pillow) or ``32`` (a square) -> ``(32, 24)``.

    Raises:
        ConfigError: anything else, or a side below 1.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if match is None:
        raise ConfigError(
            f"--image-size {text!r} is not WIDTHxHEIGHT",
            hint="e.g. --image-size 32x32 (or 32 for a square)",
        )
    width = int(match.group(1))
    height = int(match.group(2) or width)
    if min(width, height) < 1:
        raise ConfigError(f"--image-size {text!r}: each side must be at least 1 pixel")
    return width, height
