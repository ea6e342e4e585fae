"""The federated stage drawn: the accuracy curve (PNG), the report page's section, the CLI rows."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_federated(
    rows: Sequence[dict[str, Any]], initial: float | None, path: Path, *, title: str
) -> None:
    """The global model's held-out accuracy after each round (round 0: the initial model), and
    each round's time on the control plane's clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [0, *(r["round"] for r in rows)]
    acc = [initial, *(r["accuracy"] for r in rows)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    left.plot(rounds, [float("nan") if a is None else a for a in acc], marker="o")
    left.set_xlabel("round (0: initial model)")
    left.set_ylabel("held-out accuracy")
    left.set_ylim(0, 1.02)
    left.grid(alpha=0.3)
    right.bar([r["round"] for r in rows], [r["seconds"] for r in rows], color="tab:grey")
    right.set_xlabel("round")
    right.set_ylabel("round time (s, control plane)")
    fig.suptitle(f"{title} (measured this run)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def federated_html(block: dict[str, Any] | None) -> str:
    """The report page's federated section: the rounds table and the curve (inlined)."""
    if not block:
        return ""
    if "skipped" in block:
        return f"<h2>Federated</h2><p>skipped: {html.escape(block['skipped'])}</p>"
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in _row_text(r)) + "</tr>"
        for r in block["rounds_table"]
    )
    plot = Path(block["plot"])
    data = base64.b64encode(plot.read_bytes()).decode() if plot.is_file() else ""
    return (
        f"<h2>Federated ({html.escape(block['model'])}, {html.escape(block['strategy'])}, "
        f"{len(block['data']['shares'])} agents)</h2>"
        f"<p>Task {html.escape(block['task_id'])}: {html.escape(block['state'])} in "
        f"{block['seconds_parts']['task']} s; initial accuracy {_pct(block['initial_accuracy'])}"
        f"; registered: {html.escape(_registered(block))}.</p>"
        "<table><tr><th>round</th><th>held-out accuracy</th><th>participants</th><th>s</th>"
        f"<th>bytes up / down</th></tr>{cells}</table>"
        f'<p><a href="{html.escape(plot.name)}">{html.escape(plot.name)}</a></p>'
        f'<img alt="federated" src="data:image/png;base64,{data}">'
        f"<p>{html.escape(block['command'])}</p>"
    )


def federated_rows(block: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(figure, value) rows of the quickstart's CLI table."""
    if not block:
        return []
    if "skipped" in block:
        return [("skipped", block["skipped"])]
    out = [(f"task {block['task_id']}: {block['model']}, {block['strategy']}", block["state"])]
    out += [(f"round {r['round']}: accuracy / participants / s / bytes up+down",
             " / ".join(_row_text(r)[1:])) for r in block["rounds_table"]]  # fmt: skip
    out.append(("registered (fleet's control plane)", _registered(block)))
    out.append(("stage wall time", f"{block['seconds']} s"))
    return out


def _row_text(r: dict[str, Any]) -> list[str]:
    return [str(r["round"]), f"{_pct(r['accuracy'])} of {r['eval_samples']}",
            ", ".join(r["participants"]) or "none", f"{r['seconds']:.2f}",
            f"{r['bytes_up']:,} / {r['bytes_down']:,}"]  # fmt: skip


def _registered(block: dict[str, Any]) -> str:
    """The registered model's ref, or why there is none."""
    reg = block["registration"]
    return str(reg["ref"] or reg["reason"] or f"nothing (the task ended {block['state']})")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"
