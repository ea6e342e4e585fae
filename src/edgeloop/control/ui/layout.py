"""The page frame: navigation (with ``aria-current``), who is signed in, the error page."""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgeloop.control.ui.html import Html, escape, join, render
from edgeloop.control.ui.sessions import Session

# (path segment, label): the navigation, in the order (each a page: control/ui/pages_*.py).
SECTIONS = (
    ("fleet", "Fleet"),
    ("rollouts", "Rollouts"),
    ("models", "Models"),
    ("monitoring", "Monitoring"),
    ("experiments", "Experiments"),
    ("federated", "Federated tasks"),
    ("datasets", "Data sets"),
    ("labels", "Label queue"),
    ("jobs", "Retraining jobs"),
)


@dataclass(frozen=True, slots=True)
class View:
    """What a page handler returns: the title, its section in the navigation, the content."""

    title: str
    section: str
    content: Html


def nav(current: str) -> Html:
    items = []
    for key, label in SECTIONS:
        mark = ' aria-current="page"' if key == current else ""
        items.append(Html(f'<li><a href="/ui/{key}"{mark}>{escape(label)}</a></li>'))
    return join(items)


def frame(view: View, session: Session) -> Html:
    return render(
        "base.html",
        title=view.title,
        nav=nav(view.section),
        role=session.role.value,
        csrf=session.csrf,
        hx_headers=json.dumps({"X-CSRF-Token": session.csrf}),
        content=view.content,
    )


def error_view(status: int, message: str, hint: str | None, back: str) -> View:
    body = render(
        "error.html", status=status, message=message, hint=hint or "", back=Html(escape(back))
    )
    return View(f"Error {status}", "", body)
