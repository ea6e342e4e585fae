"""Where the agent keeps its state under the edgeloop home: ``HOME/agent/...``.

======================  ======================================================================
``identity.json``       node id, node token (mode 0600), the control plane's URLs
``control-cert.sha256`` the control plane's certificate, pinned at enrollment (--pin-control-cert)
``tuf/root.json``       the trust anchor the TUF client bootstraps from
``tuf/metadata/``       python-tuf's trusted metadata cache (rollback protection lives here)
``downloads/``          partial and finished downloads (a resumed download continues its file)
``slots/{a,b}/``        the two model slots; ``slots/active`` names the serving one
``update.json``         the updater's state record, rewritten durably at every transition
``paused-at-STATE``     written by the test hook ``EDGELOOP_AGENT_PAUSE_AT=STATE``
======================  ======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeloop.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class AgentHome:
    """The agent's folders, all under ``root`` (``EDGELOOP_HOME/agent``)."""

    root: Path

    @classmethod
    def under(cls, home: Path) -> AgentHome:
        """``home/agent``, created if missing.

        Raises:
            ConfigError: the folder cannot be created.
        """
        root = Path(home).expanduser().resolve() / "agent"
        try:
            for sub in ("tuf/metadata", "downloads", "slots"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the agent's folder {str(root)!r}: {exc.strerror}",
                hint="pass --home with a writable folder",
            ) from exc
        return cls(root)

    @property
    def identity(self) -> Path:
        return self.root / "identity.json"

    @property
    def control_pin(self) -> Path:
        return self.root / "control-cert.sha256"

    @property
    def tuf_root(self) -> Path:
        return self.root / "tuf" / "root.json"

    @property
    def tuf_metadata(self) -> Path:
        return self.root / "tuf" / "metadata"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def slots(self) -> Path:
        return self.root / "slots"

    @property
    def update_state(self) -> Path:
        return self.root / "update.json"

    def pause_marker(self, state: str) -> Path:
        return self.root / f"paused-at-{state}"
