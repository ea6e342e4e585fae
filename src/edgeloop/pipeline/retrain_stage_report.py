"""The retrain stage in the report: the CLI table's rows and the HTML section, from its block."""

from __future__ import annotations

import html
from typing import Any


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def retrain_rows(block: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``(figure, value)`` rows for ``edgeloop quickstart``'s table; none without a block."""
    if not block:
        return []
    if "skipped" in block:
        return [("skipped", str(block["skipped"]))]
    field, data, job = block["field"], block["dataset"], block["job"]
    rows = [
        (
            f"field: {field['samples']} shifted samples through {block['node']['name']}",
            f"{field['captured']} captured, {field['labels']['applied']} labels applied",
        ),
        (
            f"data set {data['ref']}",
            f"{data['samples']} samples, {data['labelled']} labelled (labels from the data set, "
            "standing in for a person's)",
        ),
        (f"job {job['id'][:8]} ({job['epochs_run']} epochs)", str(job["reason"])),
    ]
    rollout = block.get("rollout") or {}
    if "skipped" in rollout:
        rows.append(("rollout", str(rollout["skipped"])))
        return rows
    waves = " then ".join("+".join(w) for w in rollout["waves"])
    rows.append(
        (f"rollout {rollout['ref']} ({waves})", f"{rollout['state']} in {rollout['seconds']} s")
    )
    before, after, rec = block["accuracy_before"], block["accuracy_after"], block["recovery"]
    shifted = f"{_pct(before['shifted'])} / {_pct(after['shifted'])}"
    original = f"{_pct(before['original'])} / {_pct(after['original'])}"
    rows += [
        ("shifted test split: before / after", shifted),
        ("original test split: before / after", original),
        ("recovered of what the shift cost",
         f"{_pct(rec['recovered_share'])} of {rec['shift_cost_pp']} pp"),
        ("loss on the original test split", f"{rec['original_loss_pp']} pp"),
        ("stage wall time", f"{block['seconds']} s"),
    ]  # fmt: skip
    return rows


def retrain_html(block: dict[str, Any] | None) -> str:
    """The report's "Retrain" section: the rows above as a table, and the labels note."""
    if block is None:
        return ""
    if "skipped" in block:
        return f"<h2>Retrain</h2><p>skipped: {html.escape(str(block['skipped']))}</p>"
    cells = "".join(
        f"<tr><td>{html.escape(figure)}</td><td>{html.escape(value)}</td></tr>"
        for figure, value in retrain_rows(block)
    )
    note = html.escape(str(block["labels_note"]))
    return f"<h2>Retrain</h2><table>{cells}</table><p><i>{note}</i></p>"
