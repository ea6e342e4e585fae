"""The zygote (edgeloop.core.zygote): a real zygote process forks a tiny module per request."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeloop.core.errors import ConfigError, TransportError
from edgeloop.core.zygote import preload
from edgeloop.core.zygote_client import spawn, spawn_async

CHILD = textwrap.dedent('''
    """What a forked child sees, as one JSON line; its first argument picks what it does."""
    import json, os, resource, sys, time
    import numpy as np

    if __name__ != "__main__":  # preloaded: the zygote spends CPU its children must not count
        end = time.process_time() + 0.5
        while time.process_time() < end:
            pass

    def main():
        what = sys.argv[1]
        if what == "report":
            line = sys.stdin.readline()
            a = np.ones((300, 300))
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(json.dumps({"argv": sys.argv, "env": os.environ.get("ZYG_TEST"),
                              "home": os.environ.get("HOME"), "cwd": os.getcwd(),
                              "stdin": line, "pid": os.getpid(), "name": __name__,
                              "matmul": float((a @ a)[0, 0]),
                              "cpu_s": usage.ru_utime + usage.ru_stime}))
            print("to stderr", file=sys.stderr)
        elif what == "exit":
            sys.exit(int(sys.argv[2]))
        elif what == "sleep":
            time.sleep(60)
        elif what == "crash":
            raise RuntimeError("the child broke")
        elif what == "echo":
            for line in sys.stdin:
                print(line.strip().upper(), flush=True)

    if __name__ == "__main__":
        main()
''')


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A zygote preloading numpy and the child module: (socket path, zygote pid)."""
    folder = tmp_path_factory.mktemp("zygote")
    (folder / "zyg_child.py").write_text(CHILD)
    path = folder / "z.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.core.zygote", "--socket", str(path),
         "--preload", "numpy,zyg_child"],
        stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready["pid"] == proc.pid and ready["url"] == f"unix:{path}"
    yield path, proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    proc.stdout.close()
    assert not path.exists()  # the zygote removed its socket


def _run(path: Path, tmp: Path, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Spawn zyg_child with ``args``: (exit code, stdout, stderr)."""
    (tmp / "in").write_bytes(stdin)
    with (tmp / "in").open("rb") as i, (tmp / "out").open("wb") as o, (tmp / "err").open("wb") as e:
        child = spawn(path, ["zyg_child", *args], env={"ZYG_TEST": "yes"}, cwd=tmp,
                      stdin=i.fileno(), stdout=o.fileno(), stderr=e.fileno())  # fmt: skip
    code = child.wait(30)
    return code, (tmp / "out").read_text(), (tmp / "err").read_text()


def test_a_child_gets_its_argv_env_cwd_and_fds_and_is_metered_alone(
    zygote: tuple[Path, int], tmp_path: Path
) -> None:
    path, zygote_pid = zygote
    code, out, err = _run(path, tmp_path, "report", "x y", stdin=b"hello\n")
    assert code == 0, err
    seen = json.loads(out)
    assert seen["argv"][1:] == ["report", "x y"] and seen["name"] == "__main__"
    assert seen["env"] == "yes" and seen["home"] is None  # exactly the env asked for
    assert seen["cwd"] == str(tmp_path) and seen["stdin"] == "hello\n"
    assert seen["pid"] not in (os.getpid(), zygote_pid)
    assert seen["matmul"] == 300.0  # OpenBLAS's threads work after the fork
    # Its own CPU time, not the zygote's 0.5 s of imports: the worker's CPU budget reads it.
    assert seen["cpu_s"] < 0.4
    assert err == "to stderr\n"


def test_the_exit_code_is_reported(zygote: tuple[Path, int], tmp_path: Path) -> None:
    assert _run(zygote[0], tmp_path, "exit", "7")[0] == 7
    assert _run(zygote[0], tmp_path, "exit", "0")[0] == 0


def test_a_crashing_child_exits_1_with_its_traceback_and_the_zygote_serves_on(
    zygote: tuple[Path, int], tmp_path: Path
) -> None:
    code, _, err = _run(zygote[0], tmp_path, "crash")
    assert code == 1
    assert "Traceback" in err and "RuntimeError: the child broke" in err
    assert _run(zygote[0], tmp_path, "exit", "3")[0] == 3


def test_a_killed_child_reads_minus_sigkill_and_is_reaped(
    zygote: tuple[Path, int], tmp_path: Path
) -> None:
    with (tmp_path / "log").open("wb") as log:
        child = spawn(zygote[0], ["zyg_child", "sleep"], env={}, stdin=log.fileno(),
                      stdout=log.fileno(), stderr=log.fileno(), new_session=True)  # fmt: skip
    assert child.poll() is None and child.returncode is None
    deadline = time.monotonic() + 5
    while os.getsid(child.pid) != child.pid and time.monotonic() < deadline:
        time.sleep(0.01)  # setsid runs in the child, just after the fork
    assert os.getsid(child.pid) == child.pid != os.getsid(zygote[1])
    with pytest.raises(TimeoutError):
        child.wait(0.2)
    child.kill()
    assert child.wait(10) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child.pid}").exists()  # no zombie left: the zygote reaped it
    child.kill()  # a no-op once it ended


def test_the_async_child_talks_over_pipes(zygote: tuple[Path, int], tmp_path: Path) -> None:
    async def talk() -> tuple[bytes, int]:
        with (tmp_path / "err").open("wb") as err:
            child = await spawn_async(zygote[0], ["zyg_child", "echo"], env={},
                                      stderr=err.fileno())  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(b"ping\n")
        await child.stdin.drain()
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        child.stdin.close()  # EOF: the child's loop ends
        return line, await asyncio.wait_for(child.wait(), 30)

    assert asyncio.run(talk()) == (b"PING\n", 0)


def test_a_dead_socket_is_a_transport_error_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "nobody.sock"
    with pytest.raises(TransportError) as caught:
        spawn(gone, ["json.tool"], env={}, stdin=0, stdout=1, stderr=2)
    assert str(gone) in caught.value.message and "EDGELOOP_WORKER_ZYGOTE" in str(caught.value)


def test_a_preload_that_pulls_a_forbidden_module_is_refused() -> None:
    with pytest.raises(ConfigError, match="json"):
        preload(["json"], forbid=["json"])
