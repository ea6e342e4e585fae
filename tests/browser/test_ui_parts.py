"""The dashboard's pure parts, without a browser or a server: escaping, the fleet query's
checks, health words, where sign-in may send a browser next."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from edgeloop.control.ui.fleet_view import FleetQuery, Seen, health
from edgeloop.control.ui.html import Html, escape, render, url
from edgeloop.control.ui.routes import _next
from edgeloop.control.ui.widgets import table
from edgeloop.core.errors import ConfigError

EVIL = "<script>alert(1)</script>\"'&"


def test_every_slot_and_cell_is_escaped_unless_built_here() -> None:
    page = render("planned.html", what=EVIL, detail=Html("<em>ok</em>"))
    assert (
        "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in page
    )
    assert "<em>ok</em>" in page
    cells = table(EVIL, (EVIL,), [(EVIL, Html("<b>kept</b>"))])
    assert "<script>" not in cells and cells.count("&lt;script&gt;") == 3 and "<b>kept</b>" in cells
    assert escape(None) == "" and escape(Html("<i>")) == "<i>"
    assert url("nodes", "a/b?c=<d>", q='"x"') == "/ui/nodes/a%2Fb%3Fc%3D%3Cd%3E?q=%22x%22"


def test_a_missing_slot_is_a_bug_not_an_empty_string() -> None:
    with pytest.raises(KeyError):
        render("planned.html", what="x")


@pytest.mark.parametrize(
    ("params", "bad"), [({"seen": "<b>"}, "seen"), ({"limit": "10000"}, "limit")]
)
def test_a_bad_fleet_filter_names_the_field_and_the_allowed_values(
    params: dict[str, str], bad: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{bad} .*expected one of"):
        FleetQuery.from_params(params)


def test_the_fleet_query_keeps_a_keyset_cursor_only_when_whole() -> None:
    q = FleetQuery.from_params(
        {"q": "  a%_b  ", "seen": "silent", "after_name": "n", "after_id": "i"}
    )
    assert (q.search, q.seen, q.after, q.limit) == ("a%_b", Seen.SILENT, ("n", "i"), 50)
    assert FleetQuery.from_params({"after_name": "n"}).after is None


def test_health_words_from_a_report() -> None:
    now = 1000.0
    assert health(None, None, now)[0] == "never reported"
    assert health({}, now - 61, now)[0] == "silent"
    assert health({"updater": {"error": "disk full"}}, now, now) == ("failing", "disk full")
    assert health({"health": {"error_rate": 0.5, "requests": 4}}, now, now)[0] == "errors"
    assert health({"updater": {"state": "VERIFY"}}, now, now)[0] == "updating"
    assert (
        health({"updater": {"state": "IDLE"}, "health": {"error_rate": None}}, now, now)[0] == "ok"
    )


@pytest.mark.parametrize(
    ("given", "goes"),
    [
        ("/ui/models", "/ui/models"),
        ("https://evil.example/ui/", "/ui/fleet"),
        ("//evil.example/ui/", "/ui/fleet"),
        ("/ui/\\\\evil", "/ui/fleet"),
        ("/api/v1/nodes", "/ui/fleet"),
    ],
)
def test_sign_in_sends_a_browser_only_to_a_dashboard_page(given: str, goes: str) -> None:
    request = Request({"type": "http", "query_string": b"", "headers": []})
    assert _next(request, given) == goes
