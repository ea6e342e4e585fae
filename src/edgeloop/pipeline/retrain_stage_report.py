"""The retrain stage in the report: its blocks, the CLI table's rows and the HTML section."""

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
    return _central_rows(block) + on_device_rows(block.get("on_device"))


def _central_rows(block: dict[str, Any]) -> list[tuple[str, str]]:
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


def on_device_rows(block: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The step's rows in ``edgeloop quickstart``'s table; none without a block."""
    if not block:
        return []
    if "skipped" in block:
        return [("on-device training", str(block["skipped"]))]
    job, node = block["job"], block["node"]["name"]
    before, after, rec = block["accuracy_before"], block["accuracy_after"], block["recovery"]
    if job.get("installed"):
        what = (f"installed {job['lineage']}: {job['run_wall_s']:.1f} s training, peak RSS "
                f"{job['peak_rss_mb']:.0f} MiB")  # fmt: skip
    else:
        what = f"not installed: {job.get('why_not_installed') or job.get('reason')}"
    return [
        (f"on-device training on {node} ({block['model']}, {block['data']['samples']} samples)",
         what),
        (f"{node}'s own shift: before / after, recovered",
         f"{_pct(before['shifted'])} / {_pct(after['shifted'])}, "
         f"{_pct(rec['recovered_share'])} of {rec['shift_cost_pp']} pp"),
        (f"{node}: original test split before / after",
         f"{_pct(before['original'])} / {_pct(after['original'])}"),
    ]  # fmt: skip


def retrain_html(block: dict[str, Any] | None) -> str:
    """The report's "Retrain" section: the rows above as a table, and the labels notes (the
    field's, and the on-device run's new data)."""
    if block is None:
        return ""
    if "skipped" in block:
        return f"<h2>Retrain</h2><p>skipped: {html.escape(str(block['skipped']))}</p>"
    cells = "".join(
        f"<tr><td>{html.escape(figure)}</td><td>{html.escape(value)}</td></tr>"
        for figure, value in retrain_rows(block)
    )
    notes = [block["labels_note"], ((block.get("on_device") or {}).get("data") or {}).get(
        "labels_note")]  # fmt: skip
    said = "".join(f"<p><i>{html.escape(str(n))}</i></p>" for n in notes if n)
    return f"<h2>Retrain</h2><table>{cells}</table>{said}"


def dataset_block(made: dict[str, Any]) -> dict[str, Any]:
    """The report's block of the data set version the control plane made from the captures."""
    keep = ("ref", "samples", "labelled", "unlabelled", "classes", "content_hash", "provenance")
    return {**{k: made.get(k) for k in keep}, "captured": made.get("captured"),
            "labels_source": "the field samples' own labels in the data set, posted to the node "
            "by request id: they stand in for a person's labels"}  # fmt: skip


def job_block(job: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The report's block of the retraining job: its end state, decision, steps, mix."""
    result = job.get("result") or {}
    train = result.get("train") or {}
    return {
        "id": job["id"],
        "state": job["state"],
        "reason": job["reason"],
        "cpu_seconds": job.get("cpu_seconds"),
        "epochs_budget": epochs,
        "epochs_run": train.get("epochs_run"),
        "decision": result.get("decision"),
        "evaluation": result.get("evaluation"),
        "challenger": result.get("challenger"),
        "edge": result.get("edge"),
        "optimize": result.get("optimize"),
        "step_seconds": result.get("seconds"),
        "mix": mix_block(result.get("mix") or {}),
    }


def mix_block(mix: dict[str, Any]) -> dict[str, Any]:
    keep = ("train_samples", "val_samples", "holdout_samples", "original_test_samples",
            "recent_share_of_train", "repeat")  # fmt: skip
    return {k: mix[k] for k in keep if k in mix}
