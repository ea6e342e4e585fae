"""Packaging for devices: no container engine or systemd runs here, so what can be checked is.

The Dockerfiles and the systemd unit parse; the files they copy exist; the extras they install
exist in pyproject.toml; every flag their commands pass is one the command accepts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTRUCTIONS = {
    "FROM", "RUN", "COPY", "WORKDIR", "ENV", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK",
    "ENTRYPOINT", "CMD", "ARG", "LABEL",
}  # fmt: skip


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        out.append((word, rest.strip()))
    return out


def _help(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli.app", *command, "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=120,
    )
    return done.stdout


def _extras() -> set[str]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(doc["project"]["optional-dependencies"])


@pytest.mark.parametrize(("name", "command"), [("agent", "agent"), ("control", "control")])
def test_dockerfile_parses_and_runs_a_command_that_exists(name: str, command: str) -> None:
    steps = _instructions(DEPLOY / f"{name}.Dockerfile")
    assert {word for word, _ in steps} <= INSTRUCTIONS
    assert steps[0][0] == "FROM"
    for word, args in steps:
        if word == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name}.Dockerfile copies missing {source}"
        if word == "RUN" and "pip" in args:
            for group in re.findall(r"\[([a-z0-9,-]+)\]", args):
                assert set(group.split(",")) <= _extras(), group
    entry = json.loads(next(args for word, args in steps if word == "ENTRYPOINT"))
    assert entry[:2] == ["edgeloop", command]
    accepted = _help(command)
    for flag in (a for a in entry if a.startswith("--")):
        assert flag in accepted, f"{flag} is not an option of `edgeloop {command}`"
    assert any(word == "USER" for word, _ in steps), "runs as root"


def test_systemd_unit_parses_and_its_command_line_is_accepted() -> None:
    sections: dict[str, dict[str, str]] = {}
    current = None
    for raw in (DEPLOY / "edgeloop-agent.service").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, line
        key, _, value = line.partition("=")
        current[key.strip()] = value.strip()
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    assert service["Restart"] == "always"
    assert int(service["WatchdogSec"]) > 0 and service["Type"] == "notify"
    argv = service["ExecStart"].split()
    assert argv[0].endswith("/edgeloop") and argv[1] == "agent"
    accepted = _help("agent")
    for flag in (a for a in argv if a.startswith("--")):
        assert flag in accepted, f"{flag} is not an option of `edgeloop agent`"
    assert sections["Install"]["WantedBy"] == "multi-user.target"
