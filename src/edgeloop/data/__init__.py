"""Data sets for the loop: bundled real sets, user files, cleaning, augmentation, splits.

Importing this package pulls numpy only; scikit-learn is imported when ``digits`` is loaded,
Pillow when an image folder is read, and sktime never (its files are parsed directly).
"""

from edgeloop.data.augment import (
    AugmentConfig,
    ImageAugment,
    SignalAugment,
    TabularAugment,
    augment,
)
from edgeloop.data.bundled import BundledInfo, bundled_names, list_bundled, load_bundled
from edgeloop.data.clean import CleaningReport, ClipScope, Imputation, clean
from edgeloop.data.dataset import Dataset, Modality, Splits, Task
from edgeloop.data.images import load_image_folder
from edgeloop.data.loaders import load_csv, load_data, load_jsonl, load_npz, load_ts
from edgeloop.data.options import ColorMode, LoadOptions
from edgeloop.data.split import stratified_split

__all__ = [
    "AugmentConfig",
    "BundledInfo",
    "CleaningReport",
    "ClipScope",
    "ColorMode",
    "Dataset",
    "ImageAugment",
    "Imputation",
    "LoadOptions",
    "Modality",
    "SignalAugment",
    "Splits",
    "TabularAugment",
    "Task",
    "augment",
    "bundled_names",
    "clean",
    "list_bundled",
    "load_bundled",
    "load_csv",
    "load_data",
    "load_image_folder",
    "load_jsonl",
    "load_npz",
    "load_ts",
    "stratified_split",
]
