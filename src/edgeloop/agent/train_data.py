"""What the node's training worker reads and writes besides the worker process: its labelled
captures as an ``.npz``, and the deployment document of a node-local version.

No torch here (the agent's process imports this): the captured rows are decoded with numpy,
the self-test reference comes from the training worker's ``selftest.npz``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.agent.deployment import encode_tensor
from edgeloop.agent.slots import SlotModel, sha256_file
from edgeloop.core.errors import DataError

LOCAL_VARIANT = "node-local"
SELF_TEST_ATOL = 1e-4  # the trained module's outputs vs the ONNX file's, on this node's engine
SELF_TEST_RTOL = 1e-3


def labelled_captures(files: Iterable[Path], model: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, y, captured rows seen) of ``model``'s captured rows that have a label, from the
    capture log's JSON Lines (oldest file first; a later label of a sample wins). A line that
    is not a record (a torn last line after a crash) is skipped.

    Raises:
        DataError: fewer than 2 labelled rows, one class only, or rows of different shapes.
    """
    samples: dict[str, np.ndarray] = {}
    labels: dict[str, int] = {}
    for path in files:
        with path.open("rb") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict) or record.get("model") != model:
                    continue
                sid = str(record.get("sample_id"))
                if record.get("type") == "label" and isinstance(record.get("label"), int):
                    labels[sid] = int(record["label"])
                elif record.get("type") == "sample" and record.get("inputs"):
                    samples[sid] = _tensor(record["inputs"][0])
    both = [sid for sid in samples if sid in labels]
    if len(both) < 2:
        raise DataError(
            f"this node holds {len(both)} labelled captured rows of model {model!r} "
            f"({len(samples)} captured, {len(labels)} labels); incremental training needs >= 2",
            hint="deploy with a serving.capture policy, post labels for the captured request "
            "ids (POST /predict/labels on the node), or send the data as an .npz",
        )
    shapes = {samples[sid].shape for sid in both}
    if len(shapes) != 1:
        raise DataError(f"the labelled captured rows of {model!r} have shapes {sorted(shapes)}")
    y = np.asarray([labels[sid] for sid in both], np.int64)
    if len(np.unique(y)) < 2:
        raise DataError(
            f"the {len(both)} labelled captured rows of {model!r} are all of class {int(y[0])}; "
            "a single-class set teaches the model to answer one class",
            hint="label captured rows of more than one class first",
        )
    x = np.concatenate([samples[sid] for sid in both]).astype(np.float32)
    return x, y, len(samples)


def _tensor(doc: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(str(doc["b64"]))
    return np.frombuffer(raw, np.dtype(str(doc["datatype"]))).reshape(doc["shape"]).copy()


def local_document(
    active: SlotModel,
    onnx_file: Path,
    self_test: Path,
    lineage: str,
    parent: str,
    rebuilt: str | None = None,
) -> bytes:
    """The active slot's document with its model entry replaced by the node-local version:
    same name and version number (what clients call), variant ``node-local``, the file's
    sha256 and length, the self-test the training worker wrote, ``lineage`` and ``parent``
    (and ``rebuilt``: how an edge variant was made again from its parent's checkpoint).
    The parent's drift profile entry stays (its file is staged beside the new model: labels
    join served answers only where a profile is, and its input part still describes the
    field); the manifest does not (its tuned engine was measured on the parent's file)."""
    doc = json.loads(active.document)
    entry = dict(doc["models"][0])
    entry.pop("manifest", None)
    with np.load(self_test, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    entry.update(
        variant=LOCAL_VARIANT,
        target=f"artifacts/node-local/{lineage}.onnx",
        sha256=sha256_file(onnx_file),
        length=onnx_file.stat().st_size,
        lineage=lineage,
        parent=parent,
        self_test={
            "inputs": {k[6:]: encode_tensor(v) for k, v in arrays.items() if k[:6] == "input:"},
            "outputs": {k[7:]: encode_tensor(v) for k, v in arrays.items() if k[:7] == "output:"},
            "atol": SELF_TEST_ATOL,
            "rtol": SELF_TEST_RTOL,
        },
    )
    if rebuilt is not None:
        entry["rebuilt"] = rebuilt
    doc["models"] = [entry]
    return json.dumps(doc, sort_keys=True).encode()


def lineage_of(model: SlotModel) -> dict[str, Any]:
    """``{"lineage", "parent"}`` of a node-local slot model (the report's ``active``); {} for
    a version the control plane shipped."""
    try:
        entry = json.loads(model.document)["models"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return {}
    if not isinstance(entry, dict) or "lineage" not in entry:
        return {}
    found = {"lineage": entry["lineage"], "parent": entry.get("parent")}
    return {**found, "rebuilt": entry["rebuilt"]} if "rebuilt" in entry else found


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
