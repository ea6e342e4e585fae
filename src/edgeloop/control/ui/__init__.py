"""The fleet dashboard: server-rendered pages at ``/ui`` of the control plane (docs/ui.md).

:func:`mount` adds its routes to the control plane's app and their body caps to the app's
:class:`~edgeloop.control.limits.BodyLimits` table. Pages are HTML built from the templates in
``templates/`` (:mod:`.html` escapes every value); htmx (vendored in ``static/``) swaps page
parts in; every page needs a session (:mod:`.sessions`), every action a CSRF token and the admin
role (:mod:`.security`).
"""

from __future__ import annotations

import re
from typing import Any

from edgeloop.control.limits import Body, Route
from edgeloop.control.plane import ControlPlane


def mount(app: Any, plane: ControlPlane) -> list[Route]:
    """Add the dashboard to ``app``; returns the body caps of its form posts (small forms)."""
    from edgeloop.control.ui.routes import routes

    app.router.routes.extend(routes(plane))
    return [(re.compile(r"^/ui/.*$"), "POST", Body.SMALL)]
