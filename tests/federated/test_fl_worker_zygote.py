"""A node's torch worker forked from a workers' zygote (``fleet up --shared-imports``) that
dies is forked again on the node's next request, as a worker started on its own would be."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.agent.fl_worker import Trainer, read_share
from edgeloop.core.zygote import WORKER_ZYGOTE_ENV
from edgeloop.federated.partition import Partition
from edgeloop.sdk.fl_data import FILE, FlData


def test_a_forked_worker_that_dies_is_forked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    homes = [tmp_path / "n0", tmp_path / "n1"]
    FlData("digits", Partition.parse("iid")).write(homes)
    share = read_share(homes[0] / FILE)
    sock = tmp_path / "w.sock"
    zygote = subprocess.Popen(
        [sys.executable, "-m", "edgeloop.core.zygote", "--socket", str(sock),
         "--preload", "torch,numpy,edgeloop.training.federated_worker"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert zygote.stdout is not None
    try:
        assert json.loads(zygote.stdout.readline())["pid"] == zygote.pid
        monkeypatch.setenv(WORKER_ZYGOTE_ENV, str(sock))

        async def main() -> tuple[int, int, int, dict[str, object]]:
            trainer = Trainer(share, tmp_path / "worker.log")
            await trainer.start()
            assert trainer.proc is not None
            first = trainer.proc.pid
            os.kill(first, signal.SIGKILL)
            code = await trainer.proc.wait()
            answer = await trainer.ask({"kind": "no such kind"})  # forks a new worker first
            second = trainer.proc.pid
            await trainer.close()
            return first, code, second, answer

        first, code, second, answer = asyncio.run(main())
        assert code == -signal.SIGKILL  # reported by the zygote that reaped it
        assert second != first and "error" in answer  # a live worker refused the request
    finally:
        zygote.send_signal(signal.SIGTERM)
        assert zygote.wait(20) == 0
        zygote.stdout.close()
