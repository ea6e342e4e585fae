"""Label Studio's JSON formats, the contract with the labelling tool (no import of it).

Tasks out (Label Studio's import format, https://labelstud.io/guide/task_format): a JSON list of
``{"id", "data", "meta", "predictions"}``. ``data.sample_id`` and ``data.request_id`` carry the
sample's id, since Label Studio gives imported tasks ids of its own and keeps ``data`` as it is;
``data.image`` is a PNG path (images) or ``data.text`` the feature values (tabular, signals).
The model's answer goes in as a pre-annotation: a ``choices`` result with the prediction's
confidence as ``score``. The labelling config these tasks fit (``$image`` or ``$text``)::

    <View><Image name="image" value="$image"/>
      <Choices name="label" toName="image"><Choice value="CLASS"/>...</Choices></View>

Answers in (Label Studio's JSON export): the same tasks with ``annotations[]``, each with
``result[]`` items of ``type: "choices"`` and ``value.choices``, ``was_cancelled``,
``completed_by``, ``created_at``/``updated_at``. Per annotator the latest annotation that was
not cancelled counts; different annotators' answers are all passed on, so disagreement shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.core.errors import DataError, NotFoundError
from edgeloop.core.files import write_atomic
from edgeloop.data.dataset import Modality
from edgeloop.data.labels import Answer
from edgeloop.data.samples import NO_PREDICTION, UNLABELLED, SampleSet

FROM_NAME = "label"  # the <Choices name=...> of the labelling config


def write_studio_tasks(samples: SampleSet, path: Path, *, only_unlabelled: bool = True) -> int:
    """Write Label Studio import tasks for ``samples`` (the unlabelled ones by default).

    Images are written as PNG files into ``<path stem>_images/`` beside ``path``.
    Returns the number of tasks written.
    """
    path = Path(path)
    rows = [i for i in range(len(samples)) if not only_unlabelled or samples.y[i] == UNLABELLED]
    image_dir = path.parent / f"{path.stem}_images"
    tasks = [_task(samples, i, n, image_dir, path.parent) for n, i in enumerate(rows, start=1)]
    write_atomic(path, (json.dumps(tasks, indent=1) + "\n").encode())
    return len(tasks)


def _task(samples: SampleSet, i: int, n: int, image_dir: Path, base: Path) -> dict[str, Any]:
    sid = samples.sample_ids[i]
    data: dict[str, Any] = {"sample_id": sid, "request_id": sid}
    if samples.modality is Modality.IMAGE:
        data["image"] = str(_write_png(samples.x[i], image_dir, n).relative_to(base))
        to_name = "image"
    else:
        data["text"] = ", ".join(f"{v:.6g}" for v in samples.x[i].reshape(-1).tolist())
        to_name = "text"
    task: dict[str, Any] = {"id": n, "data": data, "meta": {"sample_id": sid}}
    predicted = int(samples.prediction[i])
    if predicted != NO_PREDICTION:
        conf = float(samples.confidence[i])
        choice = {"choices": [samples.classes[predicted]]}
        result = {"from_name": FROM_NAME, "to_name": to_name, "type": "choices", "value": choice}
        prediction: dict[str, Any] = {"model_version": "edgeloop", "result": [result]}
        if math.isfinite(conf):
            prediction["score"] = conf
        task["predictions"] = [prediction]
    return task


def _write_png(sample: np.ndarray[Any, Any], folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    img = np.asarray(sample, dtype=np.float64)
    low, high = float(img.min()), float(img.max())
    # Scaled per image to 0..255: the stored values may be normalised any way.
    scaled = np.zeros_like(img) if high <= low else (img - low) / (high - low) * 255.0
    pixels = scaled.round().astype(np.uint8)
    mode_pixels = pixels[0] if pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    target = folder / f"task-{n}.png"
    Image.fromarray(mode_pixels).save(target)
    return target


def read_studio_answers(path: Path) -> list[Answer]:
    """The answers in a Label Studio JSON export, one per task.

    Raises:
        NotFoundError: ``path`` does not exist.
        DataError: not JSON, not a list of tasks, or a task without ``data.sample_id`` or
            with malformed annotations (the message names the task).
    """
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NotFoundError(f"label file {str(path)!r} does not exist") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path} is not JSON ({exc})",
            hint="export the project from Label Studio as JSON (Export -> JSON)",
        ) from exc
    if not isinstance(tasks, list):
        raise DataError(
            f"{path} holds a JSON {type(tasks).__name__}, not a list of tasks",
            hint="export the project from Label Studio as JSON (Export -> JSON)",
        )
    return [_answer(task, f"{path}: task {n}") for n, task in enumerate(tasks, start=1)]


def _answer(task: Any, where: str) -> Answer:
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("sample_id"), str | int):
        raise DataError(
            f"{where} has no data.sample_id",
            hint="import the tasks written by `edgeloop data label export` into Label Studio, "
            "and export those",
        )
    where = f"{where} (id {task.get('id')})"
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{where}: annotations is not a list")
    latest: dict[str, tuple[tuple[str, str], tuple[str, ...]]] = {}
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("result", []), list):
            raise DataError(f"{where}: annotation {k + 1} is not an object with a result list")
        if ann.get("was_cancelled"):
            continue
        choices = _choices(ann.get("result", []), f"{where}, annotation {k + 1}")
        if not choices:
            continue
        who = _annotator(ann, k)
        when = (str(ann.get("updated_at") or ann.get("created_at") or ""), f"{k:09d}")
        if who not in latest or when >= latest[who][0]:
            latest[who] = (when, choices)
    answered = tuple(c for _, choices in latest.values() for c in choices)
    return Answer(where, str(data["sample_id"]), answered)


def _choices(result: list[Any], where: str) -> tuple[str, ...]:
    found: list[str] = []
    for item in result:
        if not isinstance(item, dict):
            raise DataError(f"{where}: a result item is not an object")
        if item.get("type") != "choices":
            continue
        value = item.get("value")
        picked = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(picked, list) or not all(isinstance(c, str) for c in picked):
            raise DataError(f"{where}: a choices result has no value.choices list of names")
        found.extend(picked)
    return tuple(found)


def _annotator(ann: dict[str, Any], k: int) -> str:
    who = ann.get("completed_by")
    if isinstance(who, dict):  # some exports expand the user: {"id": 1, "email": ...}
        who = who.get("id", who.get("email"))
    return f"annotation-{k}" if who is None else str(who)
