"""The clients of a zygote (:mod:`edgeloop.core.zygote`): ask it for a child, then watch,
signal and wait for that child like a process started on its own.

:func:`spawn` gives a :class:`ZygoteProcess` (``subprocess.Popen``'s pid, poll, wait, kill,
terminate and returncode), :func:`spawn_async` an :class:`AsyncZygoteProcess` (asyncio's
stdin writer and stdout reader, wait, kill). A child is signalled through its pidfd, never by a
pid the kernel may have reused, and its exit code comes from the zygote that reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgeloop.core.errors import TransportError
from edgeloop.core.zygote import CONNECT_TIMEOUT_S


def _connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(CONNECT_TIMEOUT_S)
    try:
        conn.connect(str(path))
    except OSError as exc:
        conn.close()
        raise TransportError(
            f"no zygote answers on {str(path)!r}: {exc}",
            hint="start it (`python -m edgeloop.core.zygote --socket PATH --preload MODULES`, "
            "or `edgeloop fleet up --shared-imports`), or unset EDGELOOP_WORKER_ZYGOTE to "
            "start the process on its own",
        ) from exc
    return conn


def _handshake(
    path: Path, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None,
    fds: Sequence[int], new_session: bool,
) -> tuple[socket.socket, int, int]:  # fmt: skip
    """Ask the zygote at ``path`` for a child: (connection, pid, pidfd)."""
    conn = _connect(path)
    try:
        request = {"argv": list(argv), "env": dict(env), "cwd": str(cwd or Path.cwd()),
                   "new_session": new_session}  # fmt: skip
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], list(fds))
        data, got, _, _ = socket.recv_fds(conn, 4096, 1)
        answer = json.loads(data.split(b"\n", 1)[0]) if data else {}
        if "pid" not in answer or len(got) != 1:
            for fd in got:
                os.close(fd)
            raise TransportError(f"the zygote on {str(path)!r} refused {argv[0]}: {answer}",
                                 hint="read the zygote's log")  # fmt: skip
        conn.setblocking(False)
        return conn, int(answer["pid"]), got[0]
    except (OSError, ValueError) as exc:
        conn.close()
        raise TransportError(f"the zygote on {str(path)!r} broke off: {exc}",
                             hint="read the zygote's log") from exc  # fmt: skip
    except BaseException:
        conn.close()
        raise


class _Watch:
    """A child's pid, pidfd and the connection its exit code arrives on."""

    def __init__(self, conn: socket.socket, pid: int, pidfd: int) -> None:
        self.conn, self.pid, self.pidfd = conn, pid, pidfd
        self._code: int | None = None
        self._buffer = b""

    @property
    def returncode(self) -> int | None:
        """The exit code (``-SIGNAL`` when killed), None while the child runs."""
        return self.poll()

    def _take(self, data: bytes) -> int | None:
        """Feed what the connection gave (b"": closed); the exit code once known."""
        if self._code is not None:
            return self._code
        self._buffer += data
        if b"\n" in self._buffer:
            self._code = int(json.loads(self._buffer.split(b"\n", 1)[0])["exit"])
        elif not data:  # closed without an exit line: the zygote itself died
            self._code = -int(signal.SIGKILL)
        if self._code is not None:
            self.conn.close()
            os.close(self.pidfd)
        return self._code

    def poll(self) -> int | None:
        """The exit code, or None while the child runs (never blocks)."""
        if self._code is None:
            with contextlib.suppress(BlockingIOError):
                self._take(self.conn.recv(4096))
        return self._code

    def send_signal(self, signum: int) -> None:
        """Signal the child through its pidfd (a no-op once it ended)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ZygoteProcess(_Watch):
    """A child of a zygote, used like :class:`subprocess.Popen` (pid, poll, wait, kill)."""

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; raises TimeoutError after ``timeout`` seconds."""
        if self._code is not None:
            return self._code
        self.conn.settimeout(timeout)
        try:
            while (code := self._take(self.conn.recv(4096))) is None:
                pass
        except TimeoutError as exc:
            raise TimeoutError(f"pid {self.pid} still runs after {timeout} s") from exc
        finally:
            if self._code is None:
                self.conn.setblocking(False)
        return code


def spawn(
    path: Path, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None,
    stdin: int, stdout: int, stderr: int, new_session: bool = False,
) -> ZygoteProcess:  # fmt: skip
    """Fork ``python -m argv[0] argv[1:]`` from the zygote at ``path`` with these fds as its
    stdin/stdout/stderr (the caller keeps and closes its own copies).

    Raises:
        TransportError: no zygote answers on ``path``, or it refused the request.
    """
    conn, pid, pidfd = _handshake(path, argv, env, cwd, (stdin, stdout, stderr), new_session)
    return ZygoteProcess(conn, pid, pidfd)


class AsyncZygoteProcess(_Watch):
    """A child of a zygote used like :class:`asyncio.subprocess.Process`, with pipes on its
    stdin and stdout."""

    stdin: asyncio.StreamWriter | None
    stdout: asyncio.StreamReader | None
    pipes: tuple[asyncio.BaseTransport, ...] = ()

    async def wait(self) -> int:
        """The exit code, once the child ended; then its pipes are closed (what it wrote
        before it ended stays readable in ``stdout``)."""
        loop = asyncio.get_running_loop()
        code = self.poll()
        while code is None:
            code = self._take(await loop.sock_recv(self.conn, 4096))
        deadline = loop.time() + 1.0  # its stdout's EOF is on its way: let the reader take it
        while not all(p.is_closing() for p in self.pipes[:1]) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for pipe in self.pipes:
            pipe.close()
        return code


async def spawn_async(
    path: Path, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None,
    stderr: int, new_session: bool = False,
) -> AsyncZygoteProcess:  # fmt: skip
    """:func:`spawn` with a pipe to the child's stdin and one from its stdout.

    Raises:
        TransportError: no zygote answers on ``path``, or it refused the request.
    """
    loop = asyncio.get_running_loop()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        conn, pid, pidfd = await asyncio.to_thread(
            _handshake, path, argv, env, cwd, (in_r, out_w, stderr), new_session
        )
    except BaseException:
        for fd in (in_w, out_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w):  # the child's ends: held by the child alone from here
            os.close(fd)
    child = AsyncZygoteProcess(conn, pid, pidfd)
    reader = asyncio.StreamReader()
    out = os.fdopen(out_r, "rb", 0)
    reading, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), out)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin,
        os.fdopen(in_w, "wb", 0),
    )
    child.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
    child.stdout = reader
    child.pipes = (reading, transport)
    return child
