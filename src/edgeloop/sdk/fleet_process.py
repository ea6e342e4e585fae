"""The processes of a local fleet (sdk/local_fleet.py): started in their own sessions with
their own log, their URL read from the JSON ready line they write once they listen, waited for
over HTTP, and stopped (SIGTERM, then SIGKILL) without ever signalling a reused pid.

A process is either a fresh interpreter or, with ``via`` (``fleet up --shared-imports``), forked
from a zygote (:mod:`edgeloop.core.zygote`) that imported its libraries already; either way it
is stopped by its pid, and a zygote's child is reaped by its zygote."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.core import zygote_client
from edgeloop.core.errors import TransportError
from edgeloop.core.tls import TlsConfig, client_context

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
# The processes this interpreter started, kept so they are reaped by the Popen that made them
# (and not garbage-collected while they run) when the fleet is stopped from the same process.
_CHILDREN: dict[int, subprocess.Popen[bytes] | zygote_client.ZygoteProcess] = {}


@dataclass(frozen=True, slots=True)
class FleetProcess:
    """One process of the fleet: what it is, where it listens, where it keeps its state."""

    role: str  # "control", "agent" or "zygote"
    name: str
    pid: int
    url: str
    home: Path
    log: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "pid": self.pid,
            "url": self.url,
            "home": str(self.home),
            "log": str(self.log),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FleetProcess:
        return cls(d["role"], d["name"], int(d["pid"]), d["url"], Path(d["home"]), Path(d["log"]))

    def alive(self) -> bool:
        """True while the process runs and is still an edgeloop process (pids get reused)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return _pid_exists(self.pid)
        if _is_zombie(self.pid):
            return False
        # The command line reads empty for a moment while the kernel sets up a fresh exec.
        return not cmdline or b"edgeloop" in cmdline


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    role: str,
    name: str,
    home: Path,
    args: list[str],
    env: dict[str, str],
    *,
    module: str = "edgeloop.cli.app",
    via: Path | None = None,
) -> tuple[FleetProcess, int]:
    """Start ``python -m module args`` (forked from the zygote listening on ``via`` when
    given); returns it (``url`` empty until :func:`wait_ready` reads it) and where its lines
    begin in its log (which may hold earlier runs' lines).

    Raises:
        TransportError: no zygote answers on ``via``.
    """
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"{role}.log"
    with log.open("ab") as out:
        start = out.tell()
        if via is None:
            child: subprocess.Popen[bytes] | zygote_client.ZygoteProcess = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # outlives `fleet up`; `fleet down` stops it
            )
        else:
            with Path(os.devnull).open("rb") as null:
                child = zygote_client.spawn(via, [module, *args], env=env, stdin=null.fileno(),
                                     stdout=out.fileno(), stderr=out.fileno(),
                                     new_session=True)  # fmt: skip
    _CHILDREN[child.pid] = child
    return FleetProcess(role, name, child.pid, "", home, log), start


def wait_ready(proc: FleetProcess, start: int) -> FleetProcess:
    """``proc`` with its URL, read from the JSON ready line it writes once it listens."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        url = _ready_url(proc, start)
        if url is not None:
            return dataclasses.replace(proc, url=url)
        if not proc.alive():
            raise TransportError(
                f"{proc.role} {proc.name!r} exited while starting: {tail(proc.log)}",
                hint=f"read its log: {proc.log}",
            )
        time.sleep(0.2)
    raise TransportError(
        f"{proc.role} {proc.name!r} did not start listening within {READY_TIMEOUT_S:.0f} s: "
        f"{tail(proc.log)}",
        hint=f"read its log: {proc.log}",
    )


def _ready_url(proc: FleetProcess, start: int) -> str | None:
    try:
        with proc.log.open("rb") as fh:
            fh.seek(start)
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if not line.startswith(b"{"):
            continue
        try:
            ready = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if isinstance(ready, dict) and ready.get("pid") == proc.pid and ready.get("url"):
            return str(ready["url"])
    return None


def wait_http(proc: FleetProcess, path: str, tls: TlsConfig | None = None) -> None:
    import httpx

    verify = client_context(tls or TlsConfig())

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.alive():
            raise TransportError(
                f"{proc.role} {proc.name!r} exited while starting: {tail(proc.log)}",
                hint=f"read its log: {proc.log}",
            )
        try:
            if httpx.get(proc.url + path, timeout=2.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TransportError(
        f"{proc.role} {proc.name!r} did not answer {proc.url + path} within "
        f"{READY_TIMEOUT_S:.0f} s: {tail(proc.log)}",
        hint=f"read its log: {proc.log}",
    )


def stop(proc: FleetProcess) -> dict[str, Any]:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; never signals a reused pid."""
    if not proc.alive():
        _reap(proc.pid)  # one killed from outside is a zombie of ours until collected
        return {"name": proc.name, "pid": proc.pid, "stopped": "was not running"}
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not proc.alive():
            return {"name": proc.name, "pid": proc.pid, "stopped": "terminated"}
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    _reap(proc.pid)
    return {"name": proc.name, "pid": proc.pid, "stopped": "killed after the timeout"}


def _reap(pid: int) -> None:
    """Collect the exit status when ``pid`` is our child (else the zombie lingers)."""
    child = _CHILDREN.get(pid)
    if child is not None:  # a zygote's child: its zygote reaps it, poll reads its code
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "no output"
