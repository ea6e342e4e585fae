"""The model page's lineage graph: a version's ancestors and descendants, drawn as SVG here.

The registry links each version to its parent (``manifest.parent``); what made the child is in
its recipe: an optimize variant names its recipe (``static-int8``) or method, a converted output
its target, a retrained version the job (``recipe.retrain.job_id``), a retrain's edge variant
``recipe.retrain_job``, a federated result (no parent) its task (``recipe.federated.task_id``).
:func:`build` collects the graph (pure), :func:`layout` places it as a tree (pure), :func:`svg`
draws it (every text escaped, every version a link) and :func:`listing` is the same graph as a
table for screen readers. No JavaScript: the SVG is part of the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeloop.control.ui.html import Html, escape, join, url
from edgeloop.control.ui.widgets import link, table
from edgeloop.registry.store import ModelVersion

MAX_NODES = 40  # versions drawn; the table lists every one
NODE_W, NODE_H, COL_W, ROW_H, PAD = 180, 44, 200, 96, 12
_CHARS = 24  # a node's text is cut to this many characters (the full text is its title)


@dataclass(frozen=True, slots=True)
class Node:
    """A version (``href`` to its page), or where a root came from (a federated task)."""

    key: str
    text: str
    href: Html | None
    current: bool = False
    detail: str = ""  # format, data set: shown under the name
    data: tuple[tuple[str, Html | None], ...] = ()  # the data it was made from (table only)


@dataclass(frozen=True, slots=True)
class Edge:
    """``parent`` made ``child``; ``label`` says how, ``href`` the job or task page if any."""

    parent: str
    child: str
    label: str
    href: Html | None = None


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    left_out: int = 0  # descendants past MAX_NODES (not drawn, not listed)


def made_by(recipe: Mapping[str, Any]) -> tuple[str, Html | None]:
    """What made a version, from its recipe: a short label and the page of its job or task."""
    retrain = recipe.get("retrain")
    if isinstance(retrain, Mapping) and retrain.get("job_id"):
        job = str(retrain["job_id"])
        return f"retrain job {job[:8]}", url("jobs", job)
    fed = recipe.get("federated")
    if isinstance(fed, Mapping) and fed.get("task_id"):
        task = str(fed["task_id"])
        return f"federated task {task[:8]}, {fed.get('rounds', '?')} rounds", url("federated", task)
    parts: list[str] = []
    if isinstance(recipe.get("recipe"), str):
        parts.append(str(recipe["recipe"]))  # the tune search's recipe (static-int8, fp16...)
    optimize = recipe.get("optimize")
    if isinstance(optimize, Mapping) and optimize.get("method"):
        parts.append(str(optimize["method"]))
    if recipe.get("target"):
        parts.append(f"convert to {recipe['target']}")
    if recipe.get("on_device"):
        parts.append("on-device training")
    href = None
    if recipe.get("retrain_job"):
        job = str(recipe["retrain_job"])
        parts.append(f"retrain job {job[:8]}")
        href = url("jobs", job)
    return (", ".join(parts) or "derived (its recipe names no step)"), href


def _node(v: ModelVersion, current: bool) -> Node:
    m = v.manifest
    detail = m.format + (f", data {m.dataset}" if m.dataset else "")
    href = url("models", v.name, v.version)
    return Node(str(v.ref), str(v.ref), href, current, detail, data_of(m.recipe, m.dataset))


def data_of(recipe: Mapping[str, Any], dataset: str | None) -> tuple[tuple[str, Html | None], ...]:
    """The data a version was made from: a retrain's data set versions (``name:version``, each
    linked to its page), else the manifest's data set name."""
    retrain = recipe.get("retrain")
    found = retrain.get("datasets") if isinstance(retrain, Mapping) else None
    out: list[tuple[str, Html | None]] = []
    for ref in found if isinstance(found, list) else ():
        name, _, version = str(ref).rpartition(":")
        out.append(
            (str(ref), url("datasets", name, version) if name and version.isdigit() else None)
        )
    if not out and dataset:
        out.append((dataset, None))
    return tuple(out)


def build(versions: Iterable[ModelVersion], ref: str) -> Graph:
    """The graph of version ``ref`` (``name:version``): its ancestors up to the root, itself,
    and its descendants (breadth first, at most ``MAX_NODES`` versions in all). A federated
    result's task is drawn as its root. Pure.

    Raises:
        KeyError: ``ref`` is not among ``versions`` (the caller checked it exists).
    """
    by_ref = {str(v.ref): v for v in versions}
    children: dict[str, list[ModelVersion]] = {}
    for v in sorted(by_ref.values(), key=lambda x: (x.name, x.version)):
        if v.manifest.parent is not None:
            children.setdefault(str(v.manifest.parent), []).append(v)
    chain = [by_ref[ref]]  # the version, then its ancestors
    while (parent := chain[-1].manifest.parent) is not None and str(parent) in by_ref:
        if any(str(parent) == str(c.ref) for c in chain):
            break  # a cycle can only come from hand-written rows
        chain.append(by_ref[str(parent)])
    nodes = {str(v.ref): _node(v, str(v.ref) == ref) for v in reversed(chain)}
    edges = [_edge(child) for child in reversed(chain[:-1])]
    queue, left_out = [ref], 0
    while queue:
        for child in children.get(queue.pop(0), ()):
            key = str(child.ref)
            if key in nodes:
                continue
            if len(nodes) >= MAX_NODES:
                left_out += 1
                continue
            nodes[key] = _node(child, False)
            edges.append(_edge(child))
            queue.append(key)
    root = chain[-1]
    origin = _origin(root)
    if origin is not None:
        nodes = {origin.key: origin, **nodes}
        label, href = made_by(root.manifest.recipe)
        if root.manifest.parent is not None:
            label, href = "parent (not in this registry)", None
        edges.insert(0, Edge(origin.key, str(root.ref), label, href))
    return Graph(tuple(nodes.values()), tuple(edges), left_out)


def _edge(child: ModelVersion) -> Edge:
    label, href = made_by(child.manifest.recipe)
    return Edge(str(child.manifest.parent), str(child.ref), label, href)


def _origin(root: ModelVersion) -> Node | None:
    """Where the root came from when that is not a version here: a removed parent, or the
    federated task that trained it."""
    if root.manifest.parent is not None:  # its parent is not in the registry (removed)
        text = str(root.manifest.parent)
        return Node(f"missing:{text}", f"{text} (not here)", None)
    fed = root.manifest.recipe.get("federated")
    if isinstance(fed, Mapping) and fed.get("task_id"):
        task = str(fed["task_id"])
        return Node(f"task:{task}", f"task {task[:12]}", url("federated", task), detail="federated")
    return None


def layout(graph: Graph) -> dict[str, tuple[float, int]]:
    """Each node's ``(column, depth)``: a tree drawn top-down, each leaf in a column of its own,
    each parent centred over its children (so no two edges cross). Pure."""
    kids: dict[str, list[str]] = {}
    has_parent = set()
    for e in graph.edges:
        kids.setdefault(e.parent, []).append(e.child)
        has_parent.add(e.child)
    out: dict[str, tuple[float, int]] = {}
    next_col = 0

    def place(key: str, depth: int) -> float:
        nonlocal next_col
        below = [k for k in kids.get(key, ()) if k not in out]
        out[key] = (0.0, depth)  # claimed before its children (a cycle never recurses)
        cols = [place(k, depth + 1) for k in below]
        if cols:
            col = (cols[0] + cols[-1]) / 2
        else:
            col, next_col = float(next_col), next_col + 1
        out[key] = (col, depth)
        return col

    for n in graph.nodes:
        if n.key not in has_parent and n.key not in out:
            place(n.key, 0)
    return out


def _cut(text: str) -> str:
    return text if len(text) <= _CHARS else text[: _CHARS - 1] + "…"


def svg(graph: Graph, title: str) -> Html:
    """The graph as inline SVG: each version a link (keyboard-focusable), each edge an arrow
    with its label; the page's own version outlined."""
    where = layout(graph)
    width = int(max((c for c, _ in where.values()), default=0) * COL_W + NODE_W + 2 * PAD)
    height = int(max((d for _, d in where.values()), default=0) * ROW_H + NODE_H + 2 * PAD)

    def corner(key: str) -> tuple[float, float]:
        col, depth = where[key]
        return PAD + col * COL_W, PAD + depth * ROW_H

    lines = []
    for e in graph.edges:
        (x1, y1), (x2, y2) = corner(e.parent), corner(e.child)
        a, b = (x1 + NODE_W / 2, y1 + NODE_H), (x2 + NODE_W / 2, y2)
        mid = (a[1] + b[1]) / 2
        d = f"M{a[0]:.0f} {a[1]:.0f} C{a[0]:.0f} {mid:.0f} {b[0]:.0f} {mid:.0f} "
        d += f"{b[0]:.0f} {b[1]:.0f}"
        lx, ly = b[0], b[1] - 14  # over the child's arrow: siblings' labels never meet
        lines.append(
            Html(
                f'<g class="edge"><path d="{d}" marker-end="url(#arrow)"/>'
                f'<text x="{lx:.0f}" y="{ly:.0f}" text-anchor="middle">{escape(_cut(e.label))}'
                f"<title>{escape(e.label)}</title></text></g>"
            )
        )
    boxes = []
    for n in graph.nodes:
        x, y = corner(n.key)
        mark = " current" if n.current else ""
        shape = Html(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 8:.0f}" y="{y + 18:.0f}" class="name">{escape(_cut(n.text))}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 35:.0f}" class="detail">{escape(_cut(n.detail))}</text>'
            f"<title>{escape(n.text)} ({escape(n.detail)})</title>"
        )
        if n.href is None:
            boxes.append(Html(f'<g class="node{mark}">{shape}</g>'))
            continue
        current = ' aria-current="page"' if n.current else ""
        boxes.append(
            Html(
                f'<a class="node{mark}" href="{n.href}"{current} '
                f'aria-label="{escape(n.text)}">{shape}</a>'
            )
        )
    return Html(
        f'<div class="graph"><svg class="lineage" role="group" aria-label="{escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z"/></marker>'
        f"</defs>{join(lines)}{join(boxes)}</svg></div>"
    )


def listing(graph: Graph) -> Html:
    """The graph as a table (the text form of the SVG): each box, its parent, what made it and
    the data it was made from."""
    names = {n.key: n for n in graph.nodes}
    made = {e.child: e for e in graph.edges}

    def cell(key: str) -> Html:
        n = names[key]
        return link(n.href, n.text) if n.href is not None else escape(n.text)

    rows = []
    for n in graph.nodes:
        e = made.get(n.key)
        how: Any = "" if e is None else link(e.href, e.label) if e.href else e.label
        data = join((link(h, t) if h else escape(t) for t, h in n.data), ", ") or "n/a"
        rows.append((cell(n.key), "none" if e is None else cell(e.parent), how, data))
    return table(
        "Lineage, each version with its parent",
        ("Version", "Parent", "Made by", "Data it was made from"),
        rows,
        "no version",
    )
