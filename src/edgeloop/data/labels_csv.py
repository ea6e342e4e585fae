"""The label queue as CSV: one row per task, for a spreadsheet or a script.

Columns: ``id`` (task number), ``sample_id``, ``request_id``, ``prediction`` (the model's class
or empty), ``confidence`` (or empty) and ``label`` (empty: the person fills it in). Reading
back, a row with an empty ``label`` is unanswered; only ``sample_id`` and ``label`` are needed.

Label Studio's CSV export of the same tasks reads too: it keeps the task's data fields as
columns (``sample_id``), names the answer's column after the ``<Choices name="label">`` tag,
and writes one row per annotation with ``annotator`` and ``updated_at``. Rows of one sample are
grouped: per annotator the latest counts, and annotators who disagree make a conflict.
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
    who = header.index("annotator") if "annotator" in header else None
    when = header.index("updated_at") if "updated_at" in header else None
    # sample id -> (where it first appeared, annotator -> (time, line, label))
    grouped: dict[str, tuple[str, dict[str, tuple[str, int, str]]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank lines spreadsheets leave at the end
        if len(row) < len(header):
            raise DataError(
                f"{path}:{line}: {len(row)} cells; expected {len(header)} as in the header"
            )
        sid, label = row[si].strip(), row[li].strip()
        if not sid:
            raise DataError(f"{path}:{line}: empty sample_id", hint="keep the sample_id column")
        key = row[who].strip() if who is not None else f"line-{line}"
        stamp = row[when].strip() if when is not None else ""
        _, latest = grouped.setdefault(sid, (f"{path}:{line}", {}))
        if key not in latest or (stamp, line) >= latest[key][:2]:
            latest[key] = (stamp, line, label)
    return [
        Answer(where, sid, tuple(label for _, _, label in latest.values() if label))
        for sid, (where, latest) in grouped.items()
    ]
