"""The node's training worker: fine-tune the model it serves when the control plane asks.

It polls ``GET /api/v1/nodes/{id}/trainings/next`` with the node token (control/train_api.py;
the node takes admin commands only through the control plane), then:

1. refuses at once, naming the capability, when this node cannot train (``train`` false in
   its capabilities: no torch, or ``EDGELOOP_AGENT_NO_TRAIN``), or does not serve the version;
2. gathers the new samples: its own labelled captures (the local capture log,
   :class:`~edgeloop.serving.capture_sink.CaptureLog`) or the job's ``.npz``; fetches the
   version's torch checkpoint and the optional old data / replay seed through the job's files
   route, each checked against its sha256;
3. runs ``python -m edgeloop.training.on_device_worker --no-onnx`` as a child process with a
   CPU budget (``--threads``, 1 unless the job says) and a memory budget (``--max-memory-mb``,
   1024 MiB unless the job says), timing it (wall seconds); the worker reports its own peak
   RSS; an accepted run's ONNX export (and self-test reference) is a second child process
   (``--export``), started once the first has ended;
   An edge variant (the job's ``rebuild``: a version without a checkpoint whose parent has one)
   trains the parent's checkpoint with ``--defer-decision``; the export child then applies the
   variant's quantization recipe again and decides on the quantized file, scored with ONNX
   Runtime against the served variant (training/on_device_rebuild.py);
4. installs an accepted result as a node-local version through the updater's states
   (:meth:`~edgeloop.agent.updater.Updater.run_local`), named with its lineage
   (``digits-cnn:3+node-2.1``); a rejected run (forgetting, no gain) changes nothing;
5. posts the figures back: accuracy before and after on the new data and on the old data
   (forgetting), wall time, peak RSS, the lineage and what the updater did.

The node's replay buffer (``HOME/training/<model>/replay.npz``) and its last installed
checkpoints stay in the node folder: a later run on the same base starts from the active
node-local version and keeps replaying earlier samples.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from edgeloop.agent.bench_worker import NodeJobPoller
from edgeloop.agent.capabilities import training
from edgeloop.agent.deployment import parse_deployment
from edgeloop.agent.home import AgentHome
from edgeloop.agent.identity import Identity
from edgeloop.agent.slots import PROFILE_FILE
from edgeloop.agent.train_data import labelled_captures, lineage_of, local_document
from edgeloop.agent.update_state import Outcome
from edgeloop.agent.updater import Updater
from edgeloop.core.errors import UntrustedArtifactError
from edgeloop.serving.capture_files import CaptureLog

TIMEOUT_S = 60.0
CAPTURE_LOG_MB = 32  # the node's local copy of its captures and labels (two rotating files)
# The worker's RSS watchdog (a guard against a runaway run, not the goal): torch alone is ~280
# MiB resident, its ONNX exporter ~110 MiB more (docs/on_device.md measures the peak per run).
DEFAULT_MEMORY_MB = 1024.0
DEFAULT_MAX_SECONDS = 240.0  # training stops then; the worker is ended at 2x + 60 s
KEPT_VERSIONS = 2  # node-local checkpoints kept (the active one and the one before)
_FLAGS = {  # job option -> worker flag
    "lr": "--lr", "batch_size": "--batch-size", "replay_size": "--replay-size",
    "replay_share": "--replay-share", "last_layers": "--last-layers",
    "max_forgetting_pp": "--max-forgetting-pp", "min_gain_pp": "--min-gain-pp",
    "seed": "--seed", "max_seconds": "--max-seconds", "threads": "--threads",
}  # fmt: skip
_CHECKPOINT = {"weights": "model.pt", "config": "model.json"}
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
Updating = Callable[[], bool]


class TrainWorker(NodeJobPoller):
    """The training jobs of one node (``identity``: its credentials once enrolled;
    ``updating``: whether the reconcile loop runs a deployment now)."""

    kind = "trainings"
    timeout_s = TIMEOUT_S

    def __init__(
        self,
        home: AgentHome,
        updater: Updater,
        identity: Callable[[], Identity | None],
        captures: CaptureLog,
        name: str,
        updating: Updating = lambda: False,
    ) -> None:
        super().__init__(identity)
        self.home = home
        self.root = home.root / "training"
        self.updater = updater
        self.captures = captures
        self.name = name
        self.updating = updating

    async def answer(
        self, http: httpx.AsyncClient, url: str, job: dict[str, Any], who: Identity
    ) -> dict[str, Any]:
        return await self.train(http, url, job, who)

    async def train(
        self, http: httpx.AsyncClient, url: str, job: dict[str, Any], who: Identity
    ) -> dict[str, Any]:
        """The answer to one job: ``{"result": ...}`` or ``{"error": ...}`` (module doc)."""
        able = training()
        if not able["train"]:
            return {"error": f"this node cannot train: its capability 'train' is false "
                    f"({able.get('train_reason')})"}  # fmt: skip
        name, _, version = str(job["model"]).partition(":")
        active = self.updater.slots.read(self.updater.slots.active_name())
        if active is None or (active.name, str(active.version)) != (name, version):
            have = f"{active.name}:{active.version}" if active else "no model"
            return {"error": f"this node does not serve {job['model']} (it serves {have}); "
                    "deploy it there first"}  # fmt: skip
        folder = self.root / name
        work = folder / f"job-{job['job_id']}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            return await self._train(http, url, job, who, active, folder, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _train(
        self,
        http: httpx.AsyncClient,
        url: str,
        job: dict[str, Any],
        who: Identity,
        active: Any,
        folder: Path,
        work: Path,
    ) -> dict[str, Any]:
        files = dict(job["files"])
        if job["data"] == "captures":
            x, y, captured = await asyncio.to_thread(
                labelled_captures, self.captures.files(), active.name
            )
            np.savez(work / "new.npz", x=x, y=y)
            source = f"captures: {len(y)} labelled of {captured} captured rows on this node"
        else:
            await _fetch(http, f"{url}/files/data", files["data"], work / "new.npz")
            source = f"uploaded .npz {files['data'][:12]}"
        parent = str(job["model"])
        local = lineage_of(active)
        checkpoint = work / "parent"
        start_from = folder / "versions" / str(local.get("lineage", ""))
        if local and (start_from / _CHECKPOINT["weights"]).is_file():
            checkpoint = start_from  # the node-local version it serves, same base
        else:
            checkpoint.mkdir()
            for key, leaf in _CHECKPOINT.items():
                await _fetch(http, f"{url}/files/{key}", files[key], checkpoint / leaf)
        args = [sys.executable, "-m", "edgeloop.training.on_device_worker",
                "--checkpoint", str(checkpoint), "--data", str(work / "new.npz"),
                "--out", str(work / "out"), "--replay", str(folder / "replay.npz"),
                "--epochs", str(int(job["epochs"])), "--parent-ref", parent,
                "--node-id", self._node_label(who), "--counter", str(self._counter(folder)),
                "--threads", "1", "--no-onnx"]  # fmt: skip
        for key in ("old_data", "replay"):
            if key in files:
                path = work / f"{key}.npz"
                await _fetch(http, f"{url}/files/{key}", files[key], path)
                args += ["--old-data" if key == "old_data" else "--replay-seed", str(path)]
        options = dict(job.get("options") or {})
        for key, flag in _FLAGS.items():
            if key in options:
                args += [flag, str(options[key])]
        if "max_seconds" not in options:  # the control plane fails a job unanswered in 600 s
            args += ["--max-seconds", str(DEFAULT_MAX_SECONDS)]
        budget = ["--max-memory-mb", str(options.get("max_memory_mb", DEFAULT_MEMORY_MB))]
        if options.get("update_norm_stats"):
            args.append("--update-norm-stats")
        rebuild = job.get("rebuild")  # an edge variant: the parent's weights, quantized again
        if rebuild:
            args.append("--defer-decision")
        run, wall = await _run_worker(args + budget, options)
        if "error" in run:
            return {"error": f"the training worker failed: {run['message']}"}
        result = {**_figures(run), "data_source": source, "worker_wall_s": round(wall, 3),
                  "parent": parent, "node": self.name, "installed": False}  # fmt: skip
        if not run["accepted"]:
            result["outcome"] = "not installed: the run was rejected"
            return {"result": result}
        # The export in a second process, once the training one has ended (the node's peak
        # memory is the larger of the two, docs/on_device.md).
        export = [sys.executable, "-m", "edgeloop.training.on_device_worker", "--threads", "1",
                  "--export", str(run["output"]), "--data", str(work / "new.npz")]  # fmt: skip
        if rebuild:
            export += _rebuild_args(rebuild, active.file, options)
        done, export_wall = await _run_worker(export + budget, options)
        if "error" in done:
            return {"error": f"the ONNX export of the accepted run failed: {done['message']}"}
        run.update(onnx=done["onnx"], onnx_max_abs_diff=done["onnx_max_abs_diff"])
        result.update(onnx_max_abs_diff=done["onnx_max_abs_diff"],
                      export_wall_s=round(export_wall, 3), export_run_s=done["wall_seconds"],
                      export_peak_rss_mb=done["peak_rss_mb"])  # fmt: skip
        if rebuild:
            begun = "the parent's checkpoint"
            if checkpoint != work / "parent":
                begun = f"node-local {local['lineage']}'s checkpoint"
            _rebuilt(result, done, rebuild, begun)
            if not done["accepted"]:
                result["outcome"] = "not installed: the rebuilt variant was rejected"
                return {"result": result}
        return {"result": await self._install(run, result, active, folder, work)}

    async def _install(
        self, run: dict[str, Any], result: dict[str, Any], active: Any, folder: Path, work: Path
    ) -> dict[str, Any]:
        """Install the accepted run as a node-local version; ``result`` with what happened."""
        out, lineage = Path(run["output"]), str(run["lineage"])
        how = _rebuilt_label(result["rebuilt"]) if "rebuilt" in result else None
        document = local_document(active, Path(run["onnx"]), out / "selftest.npz", lineage,
                                  result["parent"], how)  # fmt: skip
        deployment = parse_deployment(document, json.loads(document)["node_id"])
        if self.updating():
            result["outcome"] = "not installed: a deployment was being applied meanwhile"
            return result
        now = self.updater.slots.read(self.updater.slots.active_name())
        if now is None or now.sha256 != active.sha256:
            result["outcome"] = "not installed: the node's active model changed while training"
            return result
        (folder / "counter").write_text(lineage.rsplit(".", 1)[1])  # the label is taken
        profile = active.file.parent / PROFILE_FILE  # the parent's drift reference, kept
        outcome = await self.updater.run_local(
            deployment, document, Path(run["onnx"]), profile if profile.is_file() else None
        )
        result["installed"] = outcome is Outcome.COMMITTED
        result["outcome"] = outcome.value
        result["updater_error"] = self.updater.record.error
        result["self_test"] = self.updater.self_test.to_dict() if self.updater.self_test else None
        if result["installed"]:
            self._keep(folder, out, lineage)
        return result

    def _keep(self, folder: Path, out: Path, lineage: str) -> None:
        """Keep the installed version's checkpoint (the next run on it starts there)."""
        versions = folder / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        target = versions / lineage
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)
        kept = sorted(versions.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in kept[: max(0, len(kept) - KEPT_VERSIONS)]:
            shutil.rmtree(old, ignore_errors=True)

    def _counter(self, folder: Path) -> int:
        try:
            return int((folder / "counter").read_text()) + 1
        except (OSError, ValueError):
            return 1

    def _node_label(self, who: Identity) -> str:
        return self.name if _NODE.match(self.name) else who.node_id


def _figures(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("accepted", "rejection", "reason", "lineage", "new_accuracy_before",
            "new_accuracy_after", "old_accuracy_before", "old_accuracy_after", "forgetting_pp",
            "old_source", "new_train_samples", "new_holdout_samples", "old_samples",
            "replay_samples_used", "replay_buffer_size", "epochs_run", "budget_exhausted",
            "wall_seconds", "peak_rss_mb", "train_peak_rss_mb", "trainable_parameters",
            "threads", "onnx_max_abs_diff")  # fmt: skip
    return {k: run.get(k) for k in keys}


def _rebuild_args(rebuild: dict[str, Any], served: Path, options: dict[str, Any]) -> list[str]:
    """The export child's flags that quantize the export again and decide on the result."""
    args = ["--rebuild-recipe", str(rebuild["recipe"]), "--baseline", str(served)]
    for key in ("max_forgetting_pp", "min_gain_pp"):
        if key in options:
            args += [_FLAGS[key], str(options[key])]
    return args


def _rebuilt(
    result: dict[str, Any], done: dict[str, Any], rebuild: dict[str, Any], start: str
) -> None:
    """The rebuilt variant's check replaces the FP32 run's figures (kept under ``fp32``)."""
    keys = ("accepted", "rejection", "reason", "new_accuracy_before", "new_accuracy_after",
            "old_accuracy_before", "old_accuracy_after", "forgetting_pp")  # fmt: skip
    result["fp32"] = {k: result.get(k) for k in keys}
    result.update({k: done.get(k) for k in keys})
    result["rebuilt"] = {**done["rebuilt"], "from": rebuild["parent"], "checkpoint": start}


def _rebuilt_label(rebuilt: dict[str, Any]) -> str:
    return f"{rebuilt['recipe']} on {rebuilt['checkpoint']} ({rebuilt['from']})"


async def _fetch(http: httpx.AsyncClient, url: str, sha: str, dest: Path) -> None:
    """Download ``url`` into ``dest``, checked against ``sha``."""
    got = await http.get(url)
    if got.status_code >= 400:
        raise UntrustedArtifactError(f"GET {url}: {got.status_code} {got.text[:200]}")
    if hashlib.sha256(got.content).hexdigest() != sha:
        raise UntrustedArtifactError(f"{url} does not hash to {sha[:12]}...; not used")
    dest.write_bytes(got.content)


async def _run_worker(args: list[str], options: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The worker's JSON line and its wall seconds (start, torch import, run, export)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    limit = 2 * float(options.get("max_seconds", DEFAULT_MAX_SECONDS)) + 60.0
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        msg = f"no answer within {limit:g} s; the worker was killed"
        return {"error": "timeout", "message": msg}, time.perf_counter() - start
    wall = time.perf_counter() - start
    lines = [*reversed(out.decode(errors="replace").splitlines()),
             *reversed(err.decode(errors="replace").splitlines())]  # fmt: skip
    for line in lines:  # the result line: stdout's last, else one on stderr
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and ({"accepted", "onnx", "error"} & set(answer)):
            return answer, wall
    tail = err.decode(errors="replace")[-600:]
    msg = f"exit {proc.returncode} without a result line: {tail}"
    return {"error": "crashed", "message": msg}, wall
