"""How ``run_inference`` turns a user's input into a node's request, and its answer back.

Inputs: ``{"features": [...]}``, a numpy array, or ``{"image": "frame.jpg"}``. An image is
decoded with Pillow and preprocessed exactly as the model's manifest records under
``recipe["preprocessing"]`` (see :class:`Preprocessing`); without that record the SDK will not
guess a size, layout or scaling, since a wrong guess gives confident wrong answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError, NotFoundError

# Open Inference Protocol v2 datatype names (the KServe / Triton REST protocol).
DATATYPES: dict[str, str] = {
    "FP32": "float32", "FP64": "float64", "FP16": "float16", "INT8": "int8", "UINT8": "uint8",
    "INT16": "int16", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
}  # fmt: skip
PREPROCESSING_HINT = (
    'publish the model with recipe={"preprocessing": {"size": [W, H], "mode": "L"|"RGB", '
    '"layout": "NCHW"|"NHWC", "scale": 0.00392156862745098, "mean": [..], "std": [..]}} '
    "in its manifest, or pass the preprocessed array"
)


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """An image's way into the model: resize to ``size`` (W, H), convert to ``mode``, multiply
    by ``scale``, subtract ``mean`` and divide by ``std`` per channel, lay out as ``layout``."""

    size: tuple[int, int]
    mode: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Preprocessing:
        try:
            spec = cls(
                size=(int(doc["size"][0]), int(doc["size"][1])),
                mode=str(doc.get("mode", "RGB")),
                layout=str(doc.get("layout", "NCHW")),
                scale=float(doc.get("scale", 1.0 / 255.0)),
                mean=tuple(float(v) for v in doc.get("mean", ())),
                std=tuple(float(v) for v in doc.get("std", ())),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(
                f"the manifest's preprocessing record {dict(doc)!r} is not valid: {exc}",
                hint=PREPROCESSING_HINT,
            ) from exc
        if spec.mode not in ("L", "RGB") or spec.layout not in ("NCHW", "NHWC"):
            raise ConfigError(
                f"preprocessing mode={spec.mode!r} layout={spec.layout!r}; expected mode L or "
                "RGB and layout NCHW or NHWC",
                hint=PREPROCESSING_HINT,
            )
        return spec

    def apply(self, image_path: Path) -> npt.NDArray[np.float32]:
        """The image as one batch row of the model's input."""
        from PIL import Image, UnidentifiedImageError

        if not image_path.is_file():
            raise NotFoundError(f"image {str(image_path)!r} does not exist")
        try:
            with Image.open(image_path) as img:
                pixels = np.asarray(img.convert(self.mode).resize(self.size), np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{str(image_path)!r} is not an image Pillow can read: {exc}") from exc
        x: npt.NDArray[np.float32] = pixels[..., None] if pixels.ndim == 2 else pixels  # HWC
        x = np.multiply(x, np.float32(self.scale), dtype=np.float32)
        if self.mean:
            x = np.subtract(x, np.asarray(self.mean, np.float32), dtype=np.float32)
        if self.std:
            x = np.divide(x, np.asarray(self.std, np.float32), dtype=np.float32)
        if self.layout == "NCHW":
            x = np.transpose(x, (2, 0, 1))
        return np.ascontiguousarray(x[None], np.float32)


def as_array(
    input_data: Any, spec: Mapping[str, Any], manifest: Mapping[str, Any] | None
) -> npt.NDArray[Any]:
    """The user's input as one array for the input ``spec`` (``{"name", "datatype", "shape"}``
    from the node's ``GET /v2/models/{name}``), with a batch dimension.

    Raises:
        ConfigError: an input kind that is not known, or an image without a preprocessing record.
        DataError: the values do not fit the input's shape.
    """
    if isinstance(input_data, Mapping) and "image" in input_data:
        recipe = (manifest or {}).get("recipe") or {}
        if "preprocessing" not in recipe:
            why = "the control plane lists no manifest for it" if manifest is None else (
                "its manifest records no recipe.preprocessing")  # fmt: skip
            raise ConfigError(
                f"cannot turn image {input_data['image']!r} into the model's input: {why}",
                hint=PREPROCESSING_HINT,
            )
        array: npt.NDArray[Any] = Preprocessing.from_dict(recipe["preprocessing"]).apply(
            Path(str(input_data["image"]))
        )
    elif isinstance(input_data, Mapping) and "features" in input_data:
        array = np.asarray(input_data["features"])
    elif isinstance(input_data, np.ndarray):
        array = input_data
    else:
        raise ConfigError(
            f"run_inference input of type {type(input_data).__name__} is not known",
            hint='pass {"features": [...]}, a numpy array, or {"image": "frame.jpg"}',
        )
    return _fit(array, spec)


def _fit(array: npt.NDArray[Any], spec: Mapping[str, Any]) -> npt.NDArray[Any]:
    shape: Sequence[int] = spec.get("shape") or []
    dtype = DATATYPES.get(str(spec.get("datatype")), "float32")
    if shape and array.ndim == len(shape) - 1:
        array = array[None]  # one sample: add the batch dimension
    fixed = [(i, d) for i, d in enumerate(shape) if d is not None and int(d) > 0 and i > 0]
    if len(shape) != array.ndim or any(array.shape[i] != d for i, d in fixed):
        raise DataError(
            f"input of shape {list(array.shape)} does not fit the model's input "
            f"{spec.get('name')!r} of shape {list(shape)} (-1: any size)",
            hint="pass one sample (without the batch dimension) or a batch",
        )
    return array.astype(dtype, copy=False)


def v2_body(array: npt.NDArray[Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": spec["name"],
                "shape": list(array.shape),
                "datatype": spec.get("datatype", "FP32"),
                "data": array.ravel().tolist(),
            }
        ]
    }


def v2_outputs(doc: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The answer's outputs by name, each reshaped to its shape (nested lists)."""
    outputs: dict[str, list[Any]] = {}
    for out in doc.get("outputs") or []:
        values = np.asarray(out["data"]).reshape(out["shape"])
        outputs[str(out["name"])] = values.tolist()
    return outputs
