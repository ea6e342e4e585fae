"""A zygote: one process that imports a fleet's libraries once, then forks each node's process.

    python -m edgeloop.core.zygote --socket PATH --preload torch,numpy[,...] [--forbid torch]

For a local (simulated) fleet only: N nodes on one machine each import the same libraries, and
a forked child shares the zygote's pages copy-on-write instead of holding its own copy (``import
torch`` alone is ≈ 143 MB of private pages per process). A real node runs one agent per device,
where sharing changes nothing. Each child is still its own OS process, with its own argv,
environment, working folder, stdin/stdout/stderr, ports and identity.

Protocol, one connection per child on the Unix socket ``PATH``: the client sends one JSON line
``{"argv": [MODULE, ARG...], "env": {...}, "cwd": DIR, "new_session": bool}`` with three file
descriptors (the child's stdin, stdout, stderr) attached (``SCM_RIGHTS``); the zygote forks, the
child runs ``MODULE`` as ``python -m`` would (``runpy``, ``__main__``) and exits with its exit
code; the zygote answers ``{"pid": N}`` with a pidfd of the child attached (so a client signals
that process and never a reused pid), and ``{"exit": CODE}`` (``-SIGNAL`` when killed, like
``Popen.returncode``) once it reaped it, then closes the connection. A refused request is
answered ``{"error", "message"}``. ``new_session`` makes the child a session leader, as a
process started on its own usually is: with the kernel's autogroup scheduling
(``/proc/sys/kernel/sched_autogroup_enabled``) each session gets one CPU share, and ten workers
left in the zygote's session would split one share between them (measured: each round's local
training 2-3x longer in wall time, same CPU time).

Why single-threaded: a fork copies only the calling thread, so a lock another thread held stays
held in the child forever. The zygote runs no thread and no event loop: one ``selectors`` loop
over the listening socket, the open connections and the children's pidfds (a pidfd becomes
readable when its process exits). Importing torch starts no thread; running an op would (its
OpenMP pool), so the zygote never runs one. NumPy's OpenBLAS starts one idle thread at import,
which OpenBLAS itself stops before a fork and restarts in the child (its ``pthread_atfork``
handlers). ``gc.freeze()`` after the imports keeps the collector from writing to (and so
copying) every preloaded object in each child.

The clients (spawn a child, watch and signal it) are :mod:`edgeloop.core.zygote_client`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError

MAX_REQUEST = 1 << 20  # an environment of a few KB; more is a broken client
CONNECT_TIMEOUT_S = 10.0
SOCKET_PATH_MAX = 107  # sockaddr_un.sun_path, less its NUL
# Where an agent finds the zygote to fork its federated worker from (agent/fl_worker.py).
WORKER_ZYGOTE_ENV = "EDGELOOP_WORKER_ZYGOTE"


# ---- the zygote ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Child:
    pid: int
    pidfd: int
    conn: socket.socket | None  # None once the client hung up


@dataclass(slots=True)
class Zygote:
    """The listening zygote; :meth:`serve` runs until SIGTERM or SIGINT."""

    listener: socket.socket
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    children: dict[int, _Child] = field(default_factory=dict)  # by pidfd

    def serve(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ)
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.listener:
                    self._accept()
                elif isinstance(key.fileobj, int):
                    self._reap(key.fileobj)
                else:  # a client hung up (it sends nothing after its request)
                    self._forget(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(CONNECT_TIMEOUT_S)
            data, fds = _receive(conn)
            self._fork(conn, _parse(data), fds)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            with contextlib.suppress(OSError):
                _send(conn, {"error": type(exc).__name__, "message": str(exc)})
            conn.close()
        finally:
            for fd in fds:  # the child holds its copies; ours would keep its pipes open
                os.close(fd)

    def _fork(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        argv = [str(a) for a in request["argv"]]
        env = {str(k): str(v) for k, v in request["env"].items()}
        if not argv or len(fds) != 3:
            raise ValueError(f"a request needs argv [MODULE, ...] and 3 fds, got {argv}, {fds}")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:  # never back into the zygote's loop, whatever happens here
                self._drop_in_child(conn)
                _run_child(argv, env, str(request.get("cwd") or Path.cwd()), fds,
                           bool(request.get("new_session")))  # fmt: skip
            finally:
                os._exit(1)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = _Child(pid, pidfd, conn)
        self.selector.register(pidfd, selectors.EVENT_READ)
        conn.settimeout(None)
        try:
            _send(conn, {"pid": pid}, [pidfd])
            self.selector.register(conn, selectors.EVENT_READ)
        except OSError:  # the client left at once; the child is still reaped
            self.children[pidfd].conn = None
            conn.close()

    def _drop_in_child(self, conn: socket.socket) -> None:
        """Close the zygote's sockets and pidfds in a fresh child (closing the objects, not
        just their fds, so a later garbage collection cannot close a reused fd number)."""
        self.selector.close()
        self.listener.close()
        for child in self.children.values():
            os.close(child.pidfd)
            if child.conn is not None:
                child.conn.close()
        conn.close()

    def _reap(self, pidfd: int) -> None:
        child = self.children.pop(pidfd)
        self.selector.unregister(pidfd)
        _, status = os.waitpid(child.pid, 0)
        os.close(pidfd)
        if child.conn is not None:
            self.selector.unregister(child.conn)
            with contextlib.suppress(OSError):
                _send(child.conn, {"exit": os.waitstatus_to_exitcode(status)})
            child.conn.close()

    def _forget(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        for child in self.children.values():
            if child.conn is conn:
                child.conn = None
        conn.close()


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One request line and the fds that came with it (all of them, whatever the line)."""
    data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    while data and not data.endswith(b"\n") and len(data) <= MAX_REQUEST:
        more = conn.recv(MAX_REQUEST)
        if not more:
            break
        data += more
    return data, list(fds)


def _parse(data: bytes) -> dict[str, Any]:
    if not data.endswith(b"\n"):
        raise ValueError("the request is not one JSON line")
    request = json.loads(data)
    if not isinstance(request, dict):
        raise ValueError("the request is not a JSON object")
    return request


def _send(conn: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode() + b"\n"
    if fds:
        socket.send_fds(conn, [data], list(fds))
    else:
        conn.sendall(data)


def _run_child(
    argv: list[str], env: dict[str, str], cwd: str, fds: list[int], session: bool
) -> None:
    """In the forked child: become the requested process, run the module, exit. Never returns."""
    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds) - {0, 1, 2}:
            os.close(fd)
        _reopen_stdio()
        if session:
            os.setsid()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        if "numpy" in sys.modules:  # a fresh process draws its own seed; a fork copies it
            sys.modules["numpy"].random.seed()
        code = _run_module(argv)
        getattr(threading, "_shutdown", lambda: None)()  # what interpreter exit does:
        atexit._run_exitfuncs()  # non-daemon threads, then atexit
    except BaseException:  # a child must exit, whatever happened
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reopen_stdio() -> None:
    """Fresh text streams on fds 0-2 (the zygote's may hold buffered data)."""
    sys.stdin = os.fdopen(0, "r", encoding="utf-8", closefd=False)
    sys.stdout = os.fdopen(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = os.fdopen(2, "w", 1, "utf-8", "backslashreplace", closefd=False)


def _run_module(argv: list[str]) -> int:
    """``python -m argv[0] argv[1:]``: its exit code (SystemExit's, 1 after a traceback)."""
    sys.argv = list(argv)
    try:
        with warnings.catch_warnings():  # a preloaded module run as __main__ is expected here
            warnings.filterwarnings("ignore", ".*found in sys.modules", RuntimeWarning)
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # reported as python -m would
        traceback.print_exc()
        return 1
    return 0


def preload(modules: Sequence[str], forbid: Sequence[str] = ()) -> None:
    """Import ``modules``, refuse a forbidden one pulled in, freeze what the imports made.

    Raises:
        ConfigError: a module imports a forbidden one, or left a thread running.
    """
    for name in modules:
        importlib.import_module(name)
    pulled = sorted(m for m in forbid if m in sys.modules)
    if pulled:
        raise ConfigError(f"preloading {', '.join(modules)} imported {', '.join(pulled)}, "
                          "which this zygote must not hold",
                          hint="remove the module that imports it from --preload")  # fmt: skip
    if threading.active_count() != 1:
        raise ConfigError(f"preloading {', '.join(modules)} started Python threads "
                          f"({threading.enumerate()}); a fork would copy their locks held",
                          hint="remove that module from --preload")  # fmt: skip
    gc.collect()
    gc.freeze()


def check_socket_path(path: Path) -> Path:
    """``path``, absolute. Raises ConfigError: too long for a Unix socket."""
    path = path.absolute()
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise ConfigError(
            f"zygote socket path {str(path)!r} is longer than {SOCKET_PATH_MAX} bytes",
            hint="use a shorter fleet folder",
        )
    return path


def listen(path: Path) -> socket.socket:
    """A Unix socket at ``path`` (a stale one replaced), only for this user.

    Raises:
        ConfigError: the path is too long for a Unix socket.
    """
    path = check_socket_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(64)
    return listener


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeloop.core.zygote")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--preload", default="", help="comma-separated modules")
    p.add_argument("--forbid", default="", help="comma-separated modules it must not import")
    args = p.parse_args(argv)
    modules = [m for m in args.preload.split(",") if m]
    preload(modules, [m for m in args.forbid.split(",") if m])
    listener = listen(args.socket)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threads = sum(1 for _ in Path("/proc/self/task").iterdir())
    print(json.dumps({"pid": os.getpid(), "url": f"unix:{args.socket}", "preloaded": modules,
                      "native_threads": threads}), flush=True)  # fmt: skip
    try:
        Zygote(listener).serve()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        args.socket.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
