"""The label queue as CSV: one row per task, for a spreadsheet or a script.

Columns: ``id`` (task number), ``sample_id``, ``request_id``, ``prediction`` (the model's class
or empty), ``confidence`` (or empty) and ``label`` (empty: the person fills it in). Reading
back, a row with an empty ``label`` is unanswered; only ``sample_id`` and ``label`` are needed.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from edgeloop.core.errors import DataError, NotFoundError
from edgeloop.core.files import write_atomic
from edgeloop.data.labels import Answer
from edgeloop.data.samples import NO_PREDICTION, UNLABELLED, SampleSet

COLUMNS = ("id", "sample_id", "request_id", "prediction", "confidence", "label")


def write_csv_tasks(samples: SampleSet, path: Path, *, only_unlabelled: bool = True) -> int:
    """Write one row per task (the unlabelled samples by default); return the row count."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for i, sid in enumerate(samples.sample_ids):
        if only_unlabelled and samples.y[i] != UNLABELLED:
            continue
        n += 1
        predicted = int(samples.prediction[i])
        conf = float(samples.confidence[i])
        writer.writerow(
            [
                n,
                sid,
                sid,
                "" if predicted == NO_PREDICTION else samples.classes[predicted],
                f"{conf:.6g}" if math.isfinite(conf) else "",
                "",
            ]
        )
    write_atomic(Path(path), buf.getvalue().encode())
    return n


def read_csv_answers(path: Path) -> list[Answer]:
    """The answers in a CSV with ``sample_id`` and ``label`` columns, one per row.

    Raises:
        NotFoundError: ``path`` does not exist.
        DataError: no header with those columns, or a row too short (naming ``file:line``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise NotFoundError(f"label file {str(path)!r} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc})", hint="save the CSV as UTF-8") from exc
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DataError(f"{path} is empty", hint=f"expected a header with {', '.join(COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("sample_id", "label") if c not in header]
    if missing:
        raise DataError(
            f"{path}:1: no column {', '.join(map(repr, missing))}; the header is {header}",
            hint="keep the header written by `edgeloop data label export --format csv`",
        )
    si, li = header.index("sample_id"), header.index("label")
    answers: list[Answer] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines spreadsheets leave at the end
        if len(row) <= max(si, li):
            raise DataError(
                f"{path}:{line}: {len(row)} cells; expected {len(header)} as in the header"
            )
        sid, label = row[si].strip(), row[li].strip()
        if not sid:
            raise DataError(f"{path}:{line}: empty sample_id", hint="keep the sample_id column")
        answers.append(Answer(f"{path}:{line}", sid, (label,) if label else ()))
    return answers
