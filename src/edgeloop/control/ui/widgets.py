"""Small pieces of markup the pages share: tables, definition lists, times, state badges."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edgeloop.control.ui.html import Html, escape, join


def table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    empty: str = "none",
    body_id: str | None = None,
) -> Html:
    """A table with a caption and column headers; every cell escaped unless :class:`Html`."""
    head = join(Html(f'<th scope="col">{escape(h)}</th>') for h in headers)
    lines = [join(Html(f"<td>{escape(c)}</td>") for c in row) for row in rows]
    body = (
        join(Html(f"<tr>{line}</tr>") for line in lines)
        if lines
        else Html(f'<tr><td colspan="{len(headers)}" class="empty">{escape(empty)}</td></tr>')
    )
    tbody = Html(f'<tbody id="{escape(body_id)}">') if body_id else Html("<tbody>")
    return Html(
        f"<table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"{tbody}{body}</tbody></table>"
    )


def pairs(items: Iterable[tuple[str, Any]]) -> Html:
    """A definition list of ``(term, value)``."""
    return Html(
        "<dl>" + join(Html(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>") for k, v in items) + "</dl>"
    )


def link(href: Html, text: Any) -> Html:
    return Html(f'<a href="{href}">{escape(text)}</a>')


def badge(word: str | None) -> Html:
    """A state word with a class of its own (colour is never the only signal: the word shows)."""
    text = "n/a" if word is None else word
    kind = text.split(" (")[0].lower().replace(" ", "-").replace("_", "-")
    return Html(f'<span class="badge b-{escape(kind)}">{escape(text)}</span>')


def when(t: float | None, now: float | None = None) -> Html:
    """``12 s ago`` with the UTC time as a ``<time>`` element; ``never`` for None."""
    if t is None:
        return Html("never")
    age = (time.time() if now is None else now) - t
    stamp = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    ago = f"{age:.0f} s ago" if age < 120 else f"{age / 60:.0f} min ago" if age < 7200 else stamp
    return Html(f'<time datetime="{escape(stamp)}" title="{escape(stamp)}">{escape(ago)}</time>')


def figure(value: Any, unit: str = "", digits: int = 3) -> str:
    """A measured figure, or ``n/a`` when it was not measured (None)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}{unit}"
    return f"{value}{unit}"


def code(doc: Any) -> Html:
    """A JSON document, pretty-printed and escaped, in a focusable scrolling block."""
    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    return Html(f'<pre tabindex="0" class="doc"><code>{escape(text)}</code></pre>')


def section(title: str, body: Html, anchor: str) -> Html:
    return Html(
        f'<section aria-labelledby="{escape(anchor)}"><h2 id="{escape(anchor)}">'
        f"{escape(title)}</h2>{body}</section>"
    )


def note(text: str) -> Html:
    return Html(f'<p class="note">{escape(text)}</p>')


def labels(doc: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((doc or {}).items())) or "none"
