"""``edgeloop site add|list|rm``: the control planes the SDK (``EdgeMLManager(NAME)``) knows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit

app = typer.Typer(no_args_is_help=True)
Format = Annotated[OutputFormat, typer.Option("--format", help="table or json")]
Home = Annotated[Path | None, typer.Option(help="edgeloop home (default: EDGELOOP_HOME).")]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Site name, e.g. factory-edge-01.")],
    url: Annotated[str, typer.Option(help="The control plane URL.")],
    token_file: Annotated[Path | None, typer.Option(help="File holding the admin token.")] = None,
    token_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the admin token.")
    ] = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Add (or replace) a site profile; the token is stored in a 0600 file."""
    from edgeloop.core.errors import ConfigError, NotFoundError
    from edgeloop.sdk.site import Site, save_site

    if (token_file is None) == (token_env is None):
        raise ConfigError(
            "give exactly one of --token-file and --token-env",
            hint="the token never goes on the command line, where `ps` shows it",
        )
    if token_file is not None:
        if not token_file.is_file():
            raise NotFoundError(f"token file {str(token_file)!r} does not exist")
        token = token_file.read_text().strip()
    else:
        token = os.environ.get(str(token_env), "").strip()
        if not token:
            raise ConfigError(f"environment variable {token_env!r} is not set or empty")
    site = Site(name, url.rstrip("/"), token)
    path = save_site(site, home)
    emit({**site.shown(), "file": str(path)}, format, lambda c: c.print(f"site {name} saved"))


@app.command("list")
def list_sites(home: Home = None, format: Format = OutputFormat.TABLE) -> None:
    """List the site profiles (tokens are not shown)."""
    from edgeloop.sdk.site import load_sites, sites_path

    rows = [s.shown() for s in load_sites(home).values()]

    def render(console: Console) -> None:
        table = Table(title=f"sites ({sites_path(home)})")
        for col in ("name", "url", "token"):
            table.add_column(col)
        for row in rows:
            table.add_row(row["name"], row["url"], row["token"])
        console.print(table)

    emit({"sites": rows}, format, render)


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="The site to forget.")],
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Remove a site profile."""
    from edgeloop.sdk.site import remove_site

    site = remove_site(name, home)
    emit({"removed": site.name}, format, lambda c: c.print(f"site {name} removed"))
