"""Plots people read faster than tables: the accuracy / latency / size trade-off of variants."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgeloop.optimize.pareto import Point


def plot_pareto(
    points: Sequence[Point],
    front: Sequence[Point],
    chosen: Point | None,
    path: Path,
    *,
    title: str = "variants measured this run",
) -> Path:
    """Accuracy against latency, marker area by file size; the Pareto set joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    biggest = max((p.size_bytes for p in points), default=1)
    for p in points:
        on_front = p in front
        ax.scatter(
            p.latency_ms,
            p.accuracy,
            s=40 + 400 * p.size_bytes / biggest,
            alpha=0.8 if on_front else 0.35,
            color="tab:blue" if on_front else "tab:grey",
            edgecolors="black" if p == chosen else "none",
            linewidths=2,
        )
        label = f"{p.recipe}\n{p.size_bytes / 1024:.0f} KB"
        ax.annotate(
            label, (p.latency_ms, p.accuracy), fontsize=7, xytext=(6, 4), textcoords="offset points"
        )
    ordered = sorted(front, key=lambda p: p.latency_ms)
    ax.plot(
        [p.latency_ms for p in ordered],
        [p.accuracy for p in ordered],
        "--",
        color="tab:blue",
        linewidth=1,
        label="Pareto set",
    )
    ax.margins(x=0.12, y=0.18)  # room for the labels of the outermost points
    ax.set_xlabel("latency p50, batch 1 (ms)")
    ax.set_ylabel("accuracy on the held-out test split")
    ax.set_title(
        title + (f" — chosen: {chosen.recipe}" if chosen else " — none fits the budget"), fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
