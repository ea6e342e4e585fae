"""Site profiles: a name bound to a control plane URL and its admin token.

``EdgeMLManager("factory-edge-01")`` reads the profile from ``<edgeloop home>/sites.json``
(``EDGELOOP_HOME``, default ``~/.edgeloop``). The file holds admin tokens, so it is written
atomically (temp file, fsync, rename) with mode 0600, and read only by the user who wrote it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.files import write_atomic
from edgeloop.core.settings import Settings

SITES_FILE = "sites.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Site:
    """One control plane the SDK can talk to."""

    name: str
    url: str
    token: str

    def __post_init__(self) -> None:
        check_site_name(self.name)
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"site {self.name!r} URL {self.url!r} is not an http(s) URL",
                hint="e.g. --url http://127.0.0.1:8700",
            )
        if not self.token.strip():
            raise ConfigError(f"site {self.name!r} has an empty admin token")

    def shown(self) -> dict[str, str]:
        """The profile without its token (for listings)."""
        return {"name": self.name, "url": self.url, "token": f"({len(self.token)} characters)"}


def check_site_name(name: str) -> str:
    """``name`` if it can name a site profile. Raises ConfigError saying what can."""
    if not _NAME.match(name):
        raise ConfigError(
            f"site name {name!r} is not valid; expected 1-64 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )
    return name


def sites_path(home: Path | None = None) -> Path:
    return Settings.load(home).home / SITES_FILE


def load_sites(home: Path | None = None) -> dict[str, Site]:
    """Every stored profile by name (none when the file does not exist).

    Raises:
        ConfigError: the file is not what ``edgeloop site add`` writes.
    """
    path = sites_path(home)
    try:
        doc = json.loads(path.read_text())
        return {n: Site(n, str(s["url"]), str(s["token"])) for n, s in doc["sites"].items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{str(path)!r} is not a site file: {exc}",
            hint="remove it and add the sites again with `edgeloop site add`",
        ) from exc


def get_site(name: str, home: Path | None = None) -> Site:
    """The profile ``name``.

    Raises:
        NotFoundError: no such profile; the message lists the known ones.
    """
    sites = load_sites(home)
    if name not in sites:
        known = ", ".join(sorted(sites)) or "none"
        raise NotFoundError(
            f"site {name!r} is not known (known sites: {known}; file {sites_path(home)})",
            hint=f"add it: `edgeloop site add {name} --url URL --token-env VAR`, or start a "
            "local fleet and use EdgeMLManager.from_fleet(DIR)",
        )
    return sites[name]


def save_site(site: Site, home: Path | None = None) -> Path:
    """Add or replace ``site``; the file is written atomically with mode 0600."""
    sites = load_sites(home)
    sites[site.name] = site
    return _write(sites, home)


def remove_site(name: str, home: Path | None = None) -> Site:
    """Remove and return the profile ``name``.

    Raises:
        NotFoundError: no such profile.
    """
    site = get_site(name, home)
    sites = load_sites(home)
    del sites[name]
    _write(sites, home)
    return site


def _write(sites: dict[str, Site], home: Path | None) -> Path:
    path = sites_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"sites": {n: {"url": s.url, "token": s.token} for n, s in sorted(sites.items())}}
    write_atomic(path, json.dumps(doc, indent=2).encode())  # mkstemp creates it 0600
    path.chmod(0o600)
    return path
