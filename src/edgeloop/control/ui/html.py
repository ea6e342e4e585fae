"""A tiny templating for the dashboard: ``{{ name }}`` slots, every value escaped.

Jinja2 is not a dependency of the control plane (only torch pulls it in), so the pages are
files under ``templates/`` with named slots. A value is escaped (``html.escape`` with quotes)
unless it is :class:`Html`: markup this package built itself from escaped parts. Slots sit in
text or inside quoted attribute values only; a URL put in an attribute is built with
:func:`url`, which percent-quotes each path segment. Loops are Python: a page joins rendered
row templates with :func:`join`.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

_SLOT = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


class Html(str):
    """Markup that is safe as it stands (built here from escaped parts)."""

    __slots__ = ()


def escape(value: Any) -> Html:
    """``value`` as safe markup: :class:`Html` unchanged, anything else escaped."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(sep.join(escape(p) for p in parts))


def url(*segments: Any, **query: Any) -> Html:
    """``/ui/<segment>/...?<query>``, each segment percent-quoted (no ``/`` passes through)."""
    path = "/ui/" + "/".join(quote(str(s), safe="") for s in segments)
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    return escape(path + ("?" + urlencode(kept) if kept else ""))


@functools.cache
def _parts(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(literal texts, slot names)`` of template ``name``: texts has one more item."""
    text = resources.files(__package__).joinpath("templates", name).read_text("utf-8")
    pieces = _SLOT.split(text)
    return tuple(pieces[0::2]), tuple(pieces[1::2])


def render(name: str, **values: Any) -> Html:
    """Template ``name`` with each slot filled (escaped unless :class:`Html`).

    Raises:
        KeyError: a slot the caller gave no value for (a bug in this package).
    """
    texts, slots = _parts(name)
    out = [texts[0]]
    for slot, text in zip(slots, texts[1:], strict=True):
        out.append(escape(values[slot]))
        out.append(text)
    return Html("".join(out))
