"""The options the ``edgeloop fleet`` commands share, and the admin client they talk through:
``--control``/``--token`` when given, else the local fleet's (``fleet.json`` in ``--dir``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeloop.cli.output import OutputFormat

Format = Annotated[OutputFormat, typer.Option("--format", help="table or json")]
Folder = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Fleet folder: one home per process, logs, fleet.json. Default HOME/fleet."
    ),
]
Home = Annotated[Path | None, typer.Option(help="edgeloop home (default EDGELOOP_HOME).")]

ControlUrl = Annotated[
    str | None,
    typer.Option(
        "--control",
        envvar="EDGELOOP_CONTROL_URL",
        help="Control plane URL [the local fleet's, from fleet.json].",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EDGELOOP_ADMIN_TOKEN",
        help="Admin token [the local fleet's, from fleet.json].",
    ),
]


def fleet_folder(folder: Path | None, home: Path | None) -> Path:
    from edgeloop.core.settings import Settings

    return (folder or Settings.load(home).home / "fleet").expanduser().resolve()


def admin_client(
    control: str | None, token: str | None, folder: Path | None, home: Path | None
) -> Any:
    """A ControlClient for ``--control``/``--token``, or for the local fleet in ``folder``."""
    from edgeloop.core.errors import ConfigError, EdgeError
    from edgeloop.sdk.control_client import ControlClient
    from edgeloop.sdk.local_fleet import LocalFleet

    tls = None
    if control is None or token is None:
        try:
            fleet = LocalFleet.load(fleet_folder(folder, home))
        except EdgeError as exc:
            raise ConfigError(
                "no control plane given and no local fleet found",
                hint="pass --control URL --token T (or EDGELOOP_CONTROL_URL / "
                "EDGELOOP_ADMIN_TOKEN), or start one with `edgeloop fleet up`",
            ) from exc
        control = control or fleet.control_url
        token = token or fleet.admin_token
        tls = fleet.client_tls
    return ControlClient(control, token, tls=tls)
