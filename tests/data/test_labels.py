"""The label queue: tasks out in Label Studio JSON / CSV, answers back in, exact counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeloop.core.errors import ConfigError, DataError, NotFoundError
from edgeloop.data import Modality
from edgeloop.data.labels import (
    LabelFormat,
    Outcome,
    ground_truth_answers,
    read_answers,
    resolve,
    write_tasks,
)
from edgeloop.data.samples import NO_PREDICTION, UNLABELLED, SampleSet

CLASSES = ("cat", "dog", "eel")


def make_samples(modality: Modality = Modality.TABULAR) -> SampleSet:
    """Six samples: r0..r3 unlabelled, r4 labelled dog, r5 labelled eel."""
    shape = (6, 1, 4, 4) if modality is Modality.IMAGE else (6, 3)
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    y = np.array([UNLABELLED] * 4 + [1, 2], dtype=np.int64)
    prediction = np.array([0, 1, 2, NO_PREDICTION, 1, 0], dtype=np.int64)
    confidence = np.array([0.4, 0.55, 0.3, np.nan, 0.9, 0.8], dtype=np.float32)
    ids = tuple(f"r{i}" for i in range(6))
    return SampleSet(x, y, ids, CLASSES, modality, prediction, confidence)


def annotation(
    choice: str, who: int = 1, when: str = "2026-01-01T00:00:00Z", **kw: Any
) -> dict[str, Any]:
    """One annotation as Label Studio's JSON export writes it (a choices result)."""
    result = [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "id": "abc",
            "value": {"choices": [choice]},
        }
    ]
    return {
        "id": 1000 + who,
        "result": result,
        "was_cancelled": False,
        "ground_truth": False,
        "created_at": when,
        "updated_at": when,
        "completed_by": who,
        **kw,
    }


def studio_export(tasks_file: Path, answers: dict[str, list[dict[str, Any]]]) -> Path:
    """What Label Studio exports after import of ``tasks_file``: new ids, data kept, annotations."""
    tasks = json.loads(tasks_file.read_text())
    exported = []
    for n, task in enumerate(tasks):
        exported.append(
            {
                "id": 500 + n,
                "data": task["data"],
                "annotations": answers.get(task["data"]["sample_id"], []),
                "predictions": [],
                "project": 7,
            }
        )
    out = tasks_file.with_name("export.json")
    out.write_text(json.dumps(exported))
    return out


def test_studio_tasks_follow_the_import_format(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    assert write_tasks(make_samples(), path, LabelFormat.LABEL_STUDIO) == 4
    tasks = json.loads(path.read_text())
    assert [t["id"] for t in tasks] == [1, 2, 3, 4]
    assert tasks[0]["data"] == {"sample_id": "r0", "request_id": "r0", "text": "0, 1, 2"}
    pred = tasks[1]["predictions"][0]
    assert pred["result"][0]["type"] == "choices"
    assert pred["result"][0]["value"] == {"choices": ["dog"]}
    assert pred["score"] == pytest.approx(0.55)
    assert "predictions" not in tasks[3]  # r3 was not scored


def test_image_tasks_point_at_png_files(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    write_tasks(make_samples(Modality.IMAGE), path, LabelFormat.LABEL_STUDIO)
    tasks = json.loads(path.read_text())
    image = tmp_path / tasks[0]["data"]["image"]
    assert image.is_file() and image.read_bytes()[:4] == b"\x89PNG"


def test_studio_round_trip_counts_exactly(tmp_path: Path) -> None:
    samples = make_samples()
    tasks = tmp_path / "tasks.json"
    write_tasks(samples, tasks, LabelFormat.LABEL_STUDIO)
    export = studio_export(
        tasks,
        {
            "r0": [annotation("cat")],
            # Annotator 1 changed their mind (latest wins); a cancelled one is ignored.
            "r1": [
                annotation("cat", when="2026-01-01T00:00:00Z"),
                annotation("dog", when="2026-01-02T00:00:00Z"),
                annotation("eel", who=2, was_cancelled=True),
            ],
            "r2": [annotation("cat"), annotation("eel", who=2)],  # annotators disagree
            # r3 unanswered
        },
    )
    result = resolve(read_answers(export), samples)
    assert result.counts() == {
        "applied": 2,
        "unchanged": 0,
        "conflicting": 1,
        "unknown": 0,
        "unanswered": 1,
    }
    assert dict(result.labels) == {"r0": 0, "r1": 1}
    reasons = {i.sample_id: i.reason for i in result.items}
    assert "disagree: cat, eel" in reasons["r2"] and "task 3 (id 502)" in reasons["r2"]
    labelled = samples.with_labels(dict(result.labels))
    assert labelled.labelled == 4 and labelled.unlabelled == 2


def test_conflicts_with_stored_labels_and_unknowns(tmp_path: Path) -> None:
    export = tmp_path / "export.json"
    rows = [
        {"id": 1, "data": {"sample_id": "r4"}, "annotations": [annotation("cat")]},  # was dog
        {"id": 2, "data": {"sample_id": "r5"}, "annotations": [annotation("eel")]},  # same
        {"id": 3, "data": {"sample_id": "nope"}, "annotations": [annotation("cat")]},
        {"id": 4, "data": {"sample_id": "r0"}, "annotations": [annotation("wolf")]},
    ]
    export.write_text(json.dumps(rows))
    result = resolve(read_answers(export), make_samples())
    outcomes = {i.sample_id: i.outcome for i in result.items}
    assert outcomes == {
        "r4": Outcome.CONFLICTING,
        "r5": Outcome.UNCHANGED,
        "nope": Outcome.UNKNOWN,
        "r0": Outcome.UNKNOWN,
    }
    assert (result.applied, result.conflicting, result.unknown) == (0, 1, 2)
    assert not result.labels
    assert "'wolf' is not one of cat, dog, eel" in result.items[3].reason


def test_csv_round_trip(tmp_path: Path) -> None:
    samples = make_samples()
    path = tmp_path / "queue.csv"
    assert write_tasks(samples, path, LabelFormat.CSV) == 4
    lines = path.read_text().splitlines()
    assert lines[0] == "id,sample_id,request_id,prediction,confidence,label"
    assert lines[1] == "1,r0,r0,cat,0.4,"
    assert lines[4] == "4,r3,r3,,,"
    # A person fills in the label column for two rows, one with a class the set lacks.
    filled = [lines[0], lines[1] + "dog", lines[2] + "fox", lines[3], lines[4], ""]
    path.write_text("\n".join(filled))
    result = resolve(read_answers(path), samples)
    assert (result.applied, result.unknown, result.count(Outcome.UNANSWERED)) == (1, 1, 2)
    assert dict(result.labels) == {"r0": 1}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "is not JSON"),
        ('{"tasks": []}', "not a list of tasks"),
        ('[{"id": 9, "data": {}}]', "task 1 has no data.sample_id"),
        (
            '[{"id": 9, "data": {"sample_id": "r0"}, "annotations": [{"result": [{"type": '
            '"choices", "value": {}}]}]}]',
            "task 1 (id 9), annotation 1: a choices result",
        ),
    ],
)
def test_malformed_studio_export_names_the_task(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_answers(path)
    assert needle in info.value.message


def test_malformed_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("sample_id,label\nr0,cat\nr1\n")
    with pytest.raises(DataError) as info:
        read_answers(path)
    assert f"{path}:3" in info.value.message
    path.write_text("id,label\n1,cat\n")
    with pytest.raises(DataError, match="no column 'sample_id'"):
        read_answers(path)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_answers(tmp_path / "none.json")
    with pytest.raises(ConfigError, match="suffix '.txt'"):
        read_answers(tmp_path / "labels.txt")


def test_canonical_npz_is_reproducible() -> None:
    a, b = make_samples(), make_samples()
    assert a.to_npz_bytes() == b.to_npz_bytes()
    back = SampleSet.from_npz_bytes(a.to_npz_bytes(), "test")
    assert back.content_hash() == a.content_hash()
    assert back.sample_ids == a.sample_ids and np.array_equal(back.x, a.x)
    assert a.with_labels({"r0": 0}).content_hash() != a.content_hash()


def test_sample_set_refuses_duplicate_ids() -> None:
    s = make_samples()
    with pytest.raises(DataError, match="unique"):
        SampleSet(s.x[:2], s.y[:2], ("a", "a"), CLASSES, Modality.TABULAR)


def test_label_studio_csv_export_groups_rows_per_sample(tmp_path: Path) -> None:
    # Label Studio's CSV export: data fields as columns, one row per annotation, the answer
    # in the column named after the <Choices name="label"> tag.
    path = tmp_path / "ls.csv"
    path.write_text(
        "annotation_id,annotator,created_at,id,label,lead_time,request_id,sample_id,text,updated_at\n"
        '1,1,2026-01-01,11,cat,2.0,r0,r0,"0, 1, 2",2026-01-01T00:00:00Z\n'
        '2,1,2026-01-02,11,dog,2.0,r0,r0,"0, 1, 2",2026-01-02T00:00:00Z\n'
        '3,1,2026-01-01,12,eel,1.0,r1,r1,"3, 4, 5",2026-01-01T00:00:00Z\n'
        '4,2,2026-01-01,12,cat,1.0,r1,r1,"3, 4, 5",2026-01-01T00:00:00Z\n'
    )
    answers = read_answers(path)
    assert [(a.sample_id, a.choices) for a in answers] == [("r0", ("dog",)), ("r1", ("eel", "cat"))]
    result = resolve(answers, make_samples())
    assert (result.applied, result.conflicting) == (1, 1)
    assert dict(result.labels) == {"r0": 1}


def test_ground_truth_by_request_id_joins_like_labels() -> None:
    answers = ground_truth_answers({"r0": "eel", "r4": "dog", "r9": "cat"}, "feedback")
    result = resolve(answers, make_samples())
    assert [i.outcome for i in result.items] == [
        Outcome.APPLIED,
        Outcome.UNCHANGED,
        Outcome.UNKNOWN,
    ]
    assert dict(result.labels) == {"r0": 2}
