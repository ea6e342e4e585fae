"""The model page's Pareto plot: a model's variants by measured latency and accuracy (and size).

The variants of a version are the versions of its lineage tree (its root and every version
derived from it: optimize variants, converted outputs, retrained versions). Each is placed by the
registry's measurement of it (the first at batch size 1, else the first): latency p50 on x,
accuracy on y, the artifact's size as the point's area. A figure that was not measured is
``n/a`` in the table and the variant is left off the plot; nothing is estimated. The front is
:func:`edgeloop.optimize.pareto.pareto_front` (accuracy up, latency and size down) over the
plotted variants; the chosen variant is the one a search (``edgeloop optimize``/``tune``)
picked under its budget (its recipe names the ``objective``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from edgeloop.control.ui.html import Html, escape, join, url
from edgeloop.control.ui.widgets import figure, link, table
from edgeloop.core.types import Measurement
from edgeloop.optimize.pareto import Point, pareto_front
from edgeloop.registry.store import ModelVersion

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 340, 70, 150, 16, 50


@dataclass(frozen=True, slots=True)
class Variant:
    """One version's figures for the plot; None where the registry holds no measurement."""

    ref: str
    name: str
    version: int
    engine: str | None
    latency_ms: float | None
    accuracy: float | None
    size_bytes: int
    chosen: str | None  # "objective latency" when a search picked it, else None

    @property
    def point(self) -> Point | None:
        if self.latency_ms is None or self.accuracy is None:
            return None
        return Point(self.ref, self.accuracy, self.latency_ms, self.size_bytes)


def measurement(v: ModelVersion) -> Measurement | None:
    ms = v.manifest.measurements
    return next((m for m in ms if m.batch_size == 1), ms[0] if ms else None)


def family(versions: Iterable[ModelVersion], ref: str) -> list[ModelVersion]:
    """The versions of ``ref``'s lineage tree: its root and all the root's descendants, by
    name and version. Pure.

    Raises:
        KeyError: ``ref`` is not among ``versions``.
    """
    by_ref = {str(v.ref): v for v in versions}
    root = by_ref[ref]
    seen = {ref}
    while (p := root.manifest.parent) is not None and str(p) in by_ref and str(p) not in seen:
        root = by_ref[str(p)]
        seen.add(str(root.ref))
    kids: dict[str, list[ModelVersion]] = {}
    for v in by_ref.values():
        if v.manifest.parent is not None:
            kids.setdefault(str(v.manifest.parent), []).append(v)
    out, queue = {str(root.ref): root}, [str(root.ref)]
    while queue:
        for child in kids.get(queue.pop(0), ()):
            if str(child.ref) not in out:
                out[str(child.ref)] = child
                queue.append(str(child.ref))
    return sorted(out.values(), key=lambda v: (v.name, v.version))


def variant(v: ModelVersion) -> Variant:
    m = measurement(v)
    objective = v.manifest.recipe.get("objective")
    return Variant(
        str(v.ref),
        v.name,
        v.version,
        None if m is None else m.engine,
        None if m is None else m.latency_ms.p50,
        None if m is None else m.accuracy,
        v.size_bytes,
        None if objective is None else f"objective {objective}",
    )


def front(variants: Iterable[Variant]) -> set[str]:
    """The refs of the plotted variants on the Pareto front. Pure."""
    points = [p for v in variants if (p := v.point) is not None]
    return {p.recipe for p in pareto_front(points)}


def _span(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 0.01)
    return lo - pad, hi + pad


def plot(variants: list[Variant], current: str, title: str) -> Html:
    """The plotted variants as inline SVG: front members filled, others hollow, the chosen
    ringed, the page's own version's label in bold; each point a link to its version."""
    shown = [v for v in variants if v.point is not None]
    if not shown:
        return Html('<p class="note">No variant has both a latency and an accuracy measured, '
                    "so there is nothing to plot.</p>")  # fmt: skip
    on = front(shown)
    x0, x1 = _span([float(v.latency_ms or 0.0) for v in shown])
    y0, y1 = _span([float(v.accuracy or 0.0) for v in shown])
    biggest = max(v.size_bytes for v in shown) or 1
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def xy(v: Variant) -> tuple[float, float]:
        x = LEFT + (float(v.latency_ms or 0.0) - x0) / (x1 - x0) * plot_w
        y = TOP + (1 - (float(v.accuracy or 0.0) - y0) / (y1 - y0)) * plot_h
        return x, y

    ticks = []
    for i in range(5):
        tx, ty = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        px, py = LEFT + plot_w * i / 4, TOP + plot_h * (1 - i / 4)
        ticks.append(
            Html(
                f'<text x="{px:.0f}" y="{TOP + plot_h + 18}" text-anchor="middle">{tx:.3g}</text>'
                f'<text x="{LEFT - 6}" y="{py + 4:.0f}" text-anchor="end">{ty:.3g}</text>'
                f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py:.0f}" y2="{py:.0f}"/>'
            )
        )
    marks = []
    for v in sorted(shown, key=lambda v: -v.size_bytes):  # small points drawn over big ones
        x, y = xy(v)
        r = 4 + 8 * math.sqrt(v.size_bytes / biggest)
        kind = "front" if v.ref in on else "off-front"
        words = [v.ref, "on the Pareto front" if v.ref in on else "not on the front"]
        ring = ""
        if v.chosen:
            words.append(f"chosen ({v.chosen})")
            ring = f'<circle class="chosen" cx="{x:.1f}" cy="{y:.1f}" r="{r + 5:.1f}"/>'
        bold = " current" if v.ref == current else ""
        said = (
            f"{', '.join(words)}: latency p50 {figure(v.latency_ms, ' ms')}, "
            f"accuracy {figure(v.accuracy)}, {v.size_bytes:,} B"
        )
        marks.append(
            Html(
                f'<a href="{url("models", v.name, v.version)}" aria-label="{escape(said)}">'
                f'{ring}<circle class="{kind}" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}"/>'
                f'<text class="label{bold}" x="{x + r + 4:.1f}" y="{y + 4:.1f}">'
                f"{escape(v.ref)}{' (chosen)' if v.chosen else ''}</text>"
                f"<title>{escape(said)}</title></a>"
            )
        )
    return Html(
        f'<div class="graph"><svg class="pareto" role="group" aria-label="{escape(title)}" '
        f'width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>'
        f"{join(ticks)}"
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{H - 8}" text-anchor="middle">'
        "latency p50 (ms), lower is better</text>"
        f'<text x="14" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})">accuracy, higher is better</text>'
        f"{join(marks)}</svg></div>"
    )


def listing(variants: list[Variant]) -> Html:
    """The variants as a table (the text form of the plot), with why one is left off."""
    on = front(variants)
    rows = []
    for v in variants:
        missing = [k for k, x in (("latency", v.latency_ms), ("accuracy", v.accuracy)) if x is None]
        rows.append(
            (
                link(url("models", v.name, v.version), v.ref),
                v.engine or "n/a",
                figure(v.latency_ms, " ms"),
                figure(v.accuracy),
                f"{v.size_bytes:,} B",
                "yes" if v.ref in on else "no" if not missing else "n/a",
                v.chosen or "no",
                f"left off the plot: {' and '.join(missing)} not measured" if missing else "",
            )
        )
    return table(
        "Variants: latency p50, accuracy and size from the registry's measurements",
        ("Version", "Engine", "Latency p50", "Accuracy", "Size", "Pareto front", "Chosen", "Note"),
        rows,
        "no variant",
    )
