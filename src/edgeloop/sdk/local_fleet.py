"""A local fleet: one control plane and N agents as separate OS processes on loopback ports.

``edgeloop fleet up --nodes N`` is the embedded default a user tries first and the harness of the
end-to-end tests. Every process has its own home folder under the fleet folder, its own port and
its own log file; they run in their own sessions, so they outlive the command that started them,
and ``edgeloop fleet down`` stops them from the state file ``fleet.json``.

The admin token is generated here and handed to the control plane through its environment (not
its argv, which ``ps`` shows to every user); each agent gets a one-use enrollment token, through
its environment too (``EDGELOOP_ENROLL_TOKEN``).

``tls=True`` (``fleet up --tls``) makes a throwaway CA in ``folder/tls`` (:mod:`edgeloop.sdk.
fleet_tls`) and runs every process over HTTPS with it: the agents verify the control plane
against that CA; ``mutual_tls=True`` also makes the control plane require the nodes' (and the
admin's) client certificate. ``fleet.json`` records the files, so admin calls trust the CA.

Each process binds port 0 (a free port the kernel picks while it binds) and its URL is read from
the JSON ready line it writes to its log. A port picked here and bound later by the child could be
taken in between by any other process, and a health check would then ask the wrong server.

``shared_imports=True`` (``fleet up --shared-imports``; off by default) is for a simulated fleet
on one machine, where every node's process imports the same libraries: two zygotes
(:mod:`edgeloop.core.zygote`, sockets under ``folder/zygotes``) import them once and fork the
processes, which share those pages copy-on-write. The agents' zygote never imports torch (an
agent still reports ``torch_imported: false``); the workers' zygote (with ``fl_data`` only)
imports torch and the federated worker, and the agents fork their workers from it
(``EDGELOOP_WORKER_ZYGOTE``). Nodes stay separate processes with their own ports, folders and
identities. A real node runs one agent per device, where this changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.core.errors import ConfigError, NotFoundError, TransportError
from edgeloop.core.files import write_atomic
from edgeloop.core.tls import TlsConfig
from edgeloop.core.zygote import WORKER_ZYGOTE_ENV, check_socket_path
from edgeloop.sdk.fleet_process import (
    READY_TIMEOUT_S,
    FleetProcess,
    free_port,
    spawn,
    stop,
    tail,
    wait_http,
    wait_ready,
)
from edgeloop.sdk.fleet_tls import FleetTls, make_fleet_tls

if TYPE_CHECKING:
    from edgeloop.sdk.control_client import ControlClient
    from edgeloop.sdk.fl_data import FlData

STATE_FILE = "fleet.json"
_NODE_NAME = re.compile(r"^(?!control$|tls$|zygotes$)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a folder
ADMIN_TOKEN_ENV = "EDGELOOP_ADMIN_TOKEN"
ENROLL_TOKEN_ENV = "EDGELOOP_ENROLL_TOKEN"  # the agent CLI reads it (edgeloop.cli.agent)
# What `edgeloop agent` imports (measured with PYTHONPROFILEIMPORTTIME in an agent's log), less
# onnxruntime: its import starts a native thread, and a fork would copy that thread's locks
# held. Never torch (the zygote refuses to start if one of these pulls it in).
AGENT_PRELOAD = ("edgeloop.cli.app", "edgeloop.agent.process", "edgeloop.agent.identity",
                 "uvicorn.main", "uvloop", "httptools", "uvicorn.protocols.http.httptools_impl",
                 "httpcore", "anyio")  # fmt: skip
WORKER_PRELOAD = ("torch", "numpy", "edgeloop.training.federated_worker")
# Names tests import from here; the processes themselves are sdk/fleet_process.py.
__all__ = ["ADMIN_TOKEN_ENV", "FleetProcess", "LocalFleet", "free_port", "node_names_for", "up"]
_spawn, _stop, _wait_ready = spawn, stop, wait_ready


@dataclass(frozen=True, slots=True)
class LocalFleet:
    """A running local fleet, as recorded in ``folder/fleet.json``."""

    folder: Path
    admin_token: str
    control: FleetProcess
    agents: tuple[FleetProcess, ...]
    tls: FleetTls | None = None  # the throwaway CA's files of `fleet up --tls`
    mutual_tls: bool = False
    zygotes: tuple[FleetProcess, ...] = ()  # `fleet up --shared-imports`: agents', workers'

    @property
    def control_url(self) -> str:
        return self.control.url

    @property
    def client_tls(self) -> TlsConfig | None:
        """What an admin client needs to talk to this fleet (None: plain HTTP)."""
        return None if self.tls is None else self.tls.client(mutual=self.mutual_tls)

    def admin(self, timeout_s: float = 30.0) -> ControlClient:
        """A :class:`~edgeloop.sdk.control_client.ControlClient` of this fleet's control plane."""
        from edgeloop.sdk.control_client import ControlClient

        return ControlClient(self.control_url, self.admin_token, timeout_s, tls=self.client_tls)

    def to_dict(self, *, show_token: bool = True) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "control": self.control.to_dict(),
            "admin_token": self.admin_token if show_token else "(hidden)",
            "agents": [a.to_dict() for a in self.agents],
            "tls": None if self.tls is None else self.tls.to_dict(),
            "mutual_tls": self.mutual_tls,
            "zygotes": [z.to_dict() for z in self.zygotes],
        }

    def save(self) -> Path:
        path = self.folder / STATE_FILE
        write_atomic(path, json.dumps(self.to_dict(), indent=2).encode())  # mkstemp: mode 0600
        return path

    @classmethod
    def load(cls, folder: Path) -> LocalFleet:
        """The fleet recorded in ``folder``.

        Raises:
            NotFoundError: no fleet state there.
            ConfigError: the state file is not what ``fleet up`` writes.
        """
        path = folder / STATE_FILE
        try:
            doc = json.loads(path.read_text())
            return cls(
                folder,
                str(doc["admin_token"]),
                FleetProcess.from_dict(doc["control"]),
                tuple(FleetProcess.from_dict(a) for a in doc["agents"]),
                FleetTls.from_dict(doc["tls"]) if doc.get("tls") else None,
                bool(doc.get("mutual_tls", False)),
                tuple(FleetProcess.from_dict(z) for z in doc.get("zygotes", [])),
            )
        except FileNotFoundError:
            raise NotFoundError(
                f"no local fleet in {str(folder)!r} (no {STATE_FILE})",
                hint="start one with `edgeloop fleet up --nodes 3`",
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{str(path)!r} is not a fleet state file: {exc}",
                hint="stop the processes by hand, remove the file, and run `edgeloop fleet up`",
            ) from exc

    def down(self) -> list[dict[str, Any]]:
        """Stop every process (agents first, then the control plane, then the zygotes the
        agents and their workers were forked from); return what happened."""
        stopped = [stop(p) for p in (*self.agents, self.control, *self.zygotes)]
        (self.folder / STATE_FILE).unlink(missing_ok=True)
        return stopped

    def __enter__(self) -> LocalFleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.down()


def up(
    folder: Path,
    nodes: int,
    *,
    labels: Callable[[int], dict[str, str]] | None = None,
    agent_args: Sequence[str] = (),
    control_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    tls: bool = False,
    mutual_tls: bool = False,
    fl_data: FlData | None = None,
    names: Sequence[str] | None = None,
    shared_imports: bool = False,
) -> LocalFleet:
    """Start a control plane and ``nodes`` agents under ``folder``; wait until each answers.

    ``labels(i)`` gives node ``i``'s labels (default ``{"fleet": "local", "index": str(i)}``).
    ``tls``: every process over HTTPS with a throwaway CA; ``mutual_tls`` (implies ``tls``):
    the control plane also requires client certificates.
    ``fl_data``: each agent's own share of a data set for federated rounds (sdk/fl_data.py).
    ``names``: the agents' names (default ``node-1`` ...), one per node.
    ``shared_imports``: fork the agents (and their federated workers, with ``fl_data``) from
    zygotes that imported their libraries once (a simulated fleet's memory; module docstring).

    Raises:
        ConfigError: bad node count, or a fleet already runs in ``folder``.
        TransportError: a process did not come up; its log is named.
    """
    from edgeloop.sdk.control_client import ControlClient

    if not 1 <= nodes <= 64:
        raise ConfigError(f"--nodes {nodes} is out of range; expected 1..64 on one machine")
    node_names = node_names_for(nodes, names)
    if (folder / STATE_FILE).exists():
        running = LocalFleet.load(folder)
        if any(p.alive() for p in (running.control, *running.agents, *running.zygotes)):
            raise ConfigError(
                f"a local fleet already runs in {str(folder)!r}",
                hint="stop it with `edgeloop fleet down`, or pass another --dir",
            )
    folder.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)
    token = secrets.token_urlsafe(32)
    base_env = {**os.environ, **(env or {}), "NO_COLOR": "1"}
    certs = make_fleet_tls(folder / "tls") if tls or mutual_tls else None
    control_tls, agent_tls = _tls_args(certs, mutual_tls)
    client_tls = None if certs is None else certs.client(mutual=mutual_tls)
    # --format json last, so it wins: the ready line is how the URL is learnt.
    control_cmd = ["control", "--port", "0", "--home", str(folder / "control"), *control_tls]
    control_cmd += control_args
    control_cmd += ["--format", "json"]
    started: list[FleetProcess] = []
    zygotes = _spawn_zygotes(folder, base_env, fl_data is not None) if shared_imports else []
    started += [z for z, _ in zygotes]
    try:
        control, control_start = spawn(
            "control", "control", folder / "control", control_cmd,
            {**base_env, ADMIN_TOKEN_ENV: token},
        )  # fmt: skip
        started.append(control)
        control = wait_ready(control, control_start)
        wait_http(control, "/healthz", client_tls)
        say(f"control plane up at {control.url}")
        with ControlClient(control.url, token, tls=client_tls) as client:
            enrolls = [
                client.enrollment_token(
                    labels=labels(i) if labels else {"fleet": "local", "index": str(i + 1)}
                )["token"]
                for i in range(nodes)
            ]
        agents: list[FleetProcess] = []
        starts: list[int] = []
        if fl_data is not None:  # written before the agents start: their workers read it
            fl_data.write([folder / name for name in node_names])
        ready = [wait_ready(z, start) for z, start in zygotes]  # agents', then workers'
        agent_env = {} if len(ready) < 2 else {WORKER_ZYGOTE_ENV: str(_socket(ready[1]))}
        for z in ready:
            say(f"zygote for {z.name} up at {z.url}")
        for name, enroll in zip(node_names, enrolls, strict=True):
            home = folder / name
            agent, start = spawn(
                "agent",
                name,
                home,
                [
                    "agent",
                    "--control",
                    control.url,
                    "--port",
                    "0",
                    "--home",
                    str(home),
                    "--name",
                    name,
                    *agent_tls,
                    *agent_args,
                ],
                {**base_env, **agent_env, ENROLL_TOKEN_ENV: enroll},  # not argv: `ps` shows it
                via=_socket(ready[0]) if ready else None,
            )
            started.append(agent)
            agents.append(agent)
            starts.append(start)
        agents = [wait_ready(agent, start) for agent, start in zip(agents, starts, strict=True)]
        for agent in agents:
            wait_http(agent, "/v2/health/live", client_tls)
            say(f"{agent.name} up at {agent.url}")
        _wait_enrolled(control, token, agents, client_tls)
        say(f"{len(agents)} node(s) enrolled")
    except BaseException:
        for proc in reversed(started):
            stop(proc)
        raise
    fleet = LocalFleet(folder, token, control, tuple(agents), certs, mutual_tls, tuple(ready))
    fleet.save()
    return fleet


def _spawn_zygotes(
    folder: Path, env: dict[str, str], workers: bool
) -> list[tuple[FleetProcess, int]]:
    """Start the agents' zygote (and the workers', when the nodes train); they import while
    the control plane starts. Raises ConfigError: a socket path too long for a Unix socket."""
    wanted: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
        ("agents", AGENT_PRELOAD, ("torch",))
    ]
    if workers:
        wanted.append(("workers", WORKER_PRELOAD, ()))
    started = []
    for name, modules, forbid in wanted:
        home = folder / "zygotes" / name
        path = check_socket_path(home / "zygote.sock")
        args = ["--socket", str(path), "--preload", ",".join(modules)]
        args += ["--forbid", ",".join(forbid)] if forbid else []
        started.append(spawn("zygote", name, home, args, env, module="edgeloop.core.zygote"))
    return started


def _socket(zygote: FleetProcess) -> Path:
    return Path(zygote.url.removeprefix("unix:"))


def node_names_for(nodes: int, names: Sequence[str] | None) -> list[str]:
    """The agents' names: ``names`` checked (one per node, unique, usable as a folder and a
    node name), or ``node-1`` ... ``node-N``.

    Raises:
        ConfigError: a count that differs from ``nodes``, a repeated or malformed name.
    """
    if names is None:
        return [f"node-{i + 1}" for i in range(nodes)]
    chosen = [n.strip() for n in names]
    if len(chosen) != nodes:
        raise ConfigError(f"{len(chosen)} names ({', '.join(chosen)}) for {nodes} nodes",
                          hint="give one name per node, or leave --nodes out")  # fmt: skip
    bad = [n for n in chosen if not _NODE_NAME.fullmatch(n)]
    if bad or len(set(chosen)) != len(chosen):
        raise ConfigError(
            f"node names {chosen} must be unique, 1-64 letters, digits, '.', '_' or '-' "
            f"starting with a letter or digit, not 'control' or 'tls' (bad: "
            f"{bad or 'a repeated name'})",
            hint="e.g. --names node-camera-1,node-gateway-1",
        )
    return chosen


def _tls_args(certs: FleetTls | None, mutual: bool) -> tuple[list[str], list[str]]:
    """The TLS flags of the control plane and of each agent (none without ``certs``)."""
    if certs is None:
        return [], []
    serve = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    control = [*serve, "--tls-client-ca", str(certs.ca)] if mutual else serve
    agent = [*serve, "--ca-bundle", str(certs.ca)]
    if mutual:
        agent += ["--tls-client-cert", str(certs.client_cert)]
        agent += ["--tls-client-key", str(certs.client_key)]
    return control, agent


def _wait_enrolled(
    control: FleetProcess,
    token: str,
    agents: Sequence[FleetProcess],
    tls: TlsConfig | None = None,
) -> None:
    """Wait until the control plane lists every agent as a node, so a deployment sees them all.

    An agent answers ``/v2/health/live`` before its enrollment call has returned; a rollout
    started in between would select fewer nodes than the fleet has.
    """
    from edgeloop.sdk.control_client import ControlClient

    wanted = {a.name for a in agents}
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: set[str] = set()
    with ControlClient(control.url, token, tls=tls) as client:
        while time.monotonic() < deadline:
            seen = {str(n["name"]) for n in client.nodes()}
            if wanted <= seen:
                return
            for agent in agents:
                if agent.name not in seen and not agent.alive():
                    raise TransportError(
                        f"agent {agent.name!r} exited before it enrolled: {tail(agent.log)}",
                        hint=f"read its log: {agent.log}",
                    )
            time.sleep(0.2)
    missing = sorted(wanted - seen)
    raise TransportError(
        f"agent(s) {', '.join(missing)} did not enroll with {control.url} within "
        f"{READY_TIMEOUT_S:.0f} s",
        hint="read their logs under " + str(agents[0].home.parent),
    )
