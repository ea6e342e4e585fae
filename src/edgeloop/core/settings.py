"""One typed settings object. The home folder holds the registry database and artifacts.

Resolution order for the home folder: an explicit argument (a CLI flag), then ``EDGELOOP_HOME``,
then ``~/.edgeloop``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgeloop.core.errors import ConfigError

HOME_ENV = "EDGELOOP_HOME"
DB_ENV = "EDGELOOP_DB"
ARTIFACTS_ENV = "EDGELOOP_ARTIFACTS"


@dataclass(frozen=True, slots=True)
class Settings:
    """Where edgeloop keeps its state.

    ``db_url`` is a SQLAlchemy URL; the default is a SQLite file in the home folder.
    ``artifacts_url`` is an fsspec URL (``s3://bucket/models``) for the artifact store; None keeps
    artifacts in the home folder.
    """

    home: Path
    db_url: str
    artifacts_url: str | None = None

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @classmethod
    def load(
        cls,
        home: str | Path | None = None,
        db_url: str | None = None,
        artifacts_url: str | None = None,
    ) -> Settings:
        raw = home if home is not None else os.environ.get(HOME_ENV) or Path.home() / ".edgeloop"
        path = Path(raw).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"edgeloop home {str(path)!r} exists and is not a folder",
                hint=f"point {HOME_ENV} or --home at a folder (it is created if missing)",
            )
        path = path.resolve()
        url = db_url or os.environ.get(DB_ENV) or f"sqlite:///{path / 'registry.db'}"
        artifacts = artifacts_url or os.environ.get(ARTIFACTS_ENV) or None
        return cls(home=path, db_url=url, artifacts_url=artifacts)

    def ensure(self) -> Settings:
        """Create the home and artifact folders; return self for chaining."""
        try:
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create edgeloop home {str(self.home)!r}: {exc.strerror}",
                hint=f"set {HOME_ENV} or --home to a writable folder",
            ) from exc
        return self
