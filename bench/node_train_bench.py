"""On-device incremental training of the digits CNN ON A NODE, through the control plane.

    .venv/bin/python bench/node_train_bench.py [--seeds 0 1 2] [--epochs 25] [--lr 3e-3] \
        [--replay-share 0.75] [--variant] [--json FILE]

Per seed, real processes: ``edgeloop control`` and one ``edgeloop agent`` (its own port and
folder). Data as in bench/on_device_bench.py: digits cut by a seeded permutation into a training
part (700), val (150), the original test split (300) and a field pool (647); the zoo CNN
(width 32) trained on the training part; field drift x' = 0.5 x + 0.3. The CNN is published with
its checkpoint and drift profile and deployed to the node with capture policy ``random:1.0``.

The node then serves 200 drifted images (request ids) and gets their labels
(``POST /predict/labels``): its labelled captures. A training job (``POST
/api/v1/node-trainings``, data ``captures``, old data = the original test split, replay seed =
a 500-sample share of the training part) makes the agent run the training worker (one torch
thread) and install the result as a node-local version. Accuracy is measured on what the node's
server answers, before and after, on the 447 other drifted images and on the original test
split (300): ``recovered`` = gain on the drifted set / (test accuracy before - drifted accuracy
before), ``forgetting`` = test accuracy before - after, in points. Wall time and peak RSS are
the worker processes' (the training one, then the export one for an accepted run: process wall
from the agent's start of each to its answer; VmHWM each read itself).
``--variant``: the node serves the optimize stage's kind of edge variant instead,
``digits-cnn-edge:1`` (static INT8 of the CNN, calibrated on 256 training images, published
as the child of ``digits-cnn:1`` without a checkpoint of its own); the job names the variant,
the node fine-tunes the parent's checkpoint and quantizes the export again before the check
(training/on_device_rebuild.py), and the node's server answers with the rebuilt INT8 file.
Prints a markdown table on stderr and the rows as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.agent.agent_process import AgentProcess  # noqa: E402
from tests.control.process import control_process  # noqa: E402

from edgeloop.core.types import Manifest, ModelRef  # noqa: E402
from edgeloop.data import load_bundled  # noqa: E402
from edgeloop.data.dataset import Splits  # noqa: E402
from edgeloop.formats.onnx_export import export_checked  # noqa: E402
from edgeloop.formats.onnx_info import inspect_onnx  # noqa: E402
from edgeloop.monitoring import DriftMonitor  # noqa: E402
from edgeloop.optimize.rebuild import rebuild  # noqa: E402
from edgeloop.optimize.recipe import Recipe  # noqa: E402
from edgeloop.sdk import node_training as nt  # noqa: E402
from edgeloop.sdk.control_client import ControlClient  # noqa: E402
from edgeloop.training import ArchConfig, FitConfig, fit, save_checkpoint  # noqa: E402
from edgeloop.training.zoo import deployable  # noqa: E402

DONE = {"COMPLETED", "HALTED", "ROLLED_BACK"}


def drift(x: np.ndarray) -> np.ndarray:
    return (0.5 * x + 0.3).astype(np.float32)


def prepare(seed: int, work: Path) -> dict[str, Any]:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    d = load_bundled("digits")
    perm = np.random.default_rng(seed).permutation(len(d))
    train, val, test, field = perm[:700], perm[700:850], perm[850:1150], perm[1150:]
    splits = Splits(d.subset(train, "train"), d.subset(val, "val"), d.subset(test, "test"), seed)
    arch = ArchConfig("cnn", (1, 8, 8), 10)
    result = fit(arch, splits, FitConfig(epochs=15, seed=seed), progress=False)
    ckpt = work / "digits-cnn"
    save_checkpoint(ckpt, result.module, arch, result.config, result.test_metrics,
                    dataset=splits.train)  # fmt: skip
    onnx = work / "digits-cnn.onnx"
    export_checked(deployable(result.module, arch), splits.val.x[:64], onnx, split="val")
    probs = deployable(result.module, arch)(torch.from_numpy(splits.val.x)).detach().numpy()
    profile = work / "digits-cnn.profile.npz"
    monitor = DriftMonitor.fit(splits.val.x, probs, probs.argmax(axis=1))
    profile.write_bytes(monitor.profile.to_bytes())
    info = inspect_onnx(onnx)
    manifest = Manifest(name="digits-cnn", format="onnx", inputs=info.inputs,
                        outputs=info.outputs, labels=d.classes)  # fmt: skip
    xf, yf = drift(d.x[field]), d.y[field]
    pick = np.random.default_rng(seed).permutation(len(train))[:500]
    return {
        "ckpt": ckpt, "onnx": onnx, "profile": profile, "manifest": manifest,
        "new": (xf[:200], yf[:200]), "held": (xf[200:], yf[200:]),
        "old": (splits.test.x, splits.test.y),
        "seed_replay": (splits.train.x[pick], splits.train.y[pick]), "splits": splits,
    }  # fmt: skip


def publish_variant(client: ControlClient, p: dict[str, Any], work: Path) -> str:
    """The static-INT8 child of digits-cnn:1 (the optimize stage's default recipe settings,
    calibrated on its training split), published without a checkpoint; its ref."""
    splits = p["splits"]
    edge = rebuild(Recipe.parse("static-int8"), p["onnx"], splits.train, splits.val, work / "q")
    fp32: Manifest = p["manifest"]
    manifest = Manifest(name="digits-cnn-edge", format="onnx", inputs=fp32.inputs,
                        outputs=fp32.outputs, labels=fp32.labels, recipe={"recipe": "static-int8"},
                        parent=ModelRef("digits-cnn", 1))  # fmt: skip
    return str(client.publish_model(edge[-1].path, manifest, profile=p["profile"])["ref"])


def served_accuracy(node: AgentProcess, x: np.ndarray, y: np.ndarray) -> float:
    right = 0
    for row, label in zip(x, y, strict=True):
        answer = node.predict(row.reshape(-1).tolist()).raise_for_status().json()
        right += int(answer["prediction"] == int(label))
    return right / len(y)


def run_seed(seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="node-train-bench-") as tmp:
        work = Path(tmp)
        p = prepare(seed, work)
        with control_process(work / "ctl", None, "--tick-s", "0.1") as ctl:
            token = (work / "ctl" / "control" / "admin.token").read_text().strip()
            with ControlClient(ctl.url, token) as client:
                client.publish_model(p["onnx"], p["manifest"], profile=p["profile"],
                                     checkpoint=p["ckpt"])  # fmt: skip
                model = publish_variant(client, p, work) if opts.variant else "digits-cnn:1"
                files = {"old_data": nt.put_npz(client, *p["old"]),
                         "replay": nt.put_npz(client, *p["seed_replay"])}  # fmt: skip
                node = AgentProcess(work / "node", ctl.url, poll_s=0.5,
                                    enroll_token=client.enrollment_token()["token"])  # fmt: skip
                try:
                    node_id = node.wait_enrolled()["node_id"]
                    spec = {"name": "d1", "model": model,
                            "plan": {"soak_s": 0, "watch_s": 0.5},
                            "serving": {"capture": {"policy": "random:1.0"}}}  # fmt: skip
                    rollout = client.deploy(spec)
                    assert client.wait_rollout(rollout["rollout_id"], DONE)["state"] == "COMPLETED"
                    held_before = served_accuracy(node, *p["held"])
                    old_before = served_accuracy(node, *p["old"])
                    x, y = p["new"]
                    for i, row in enumerate(x):
                        body = {"features": row.reshape(-1).tolist(), "request_id": f"n{i}"}
                        node.http.post("/predict", json=body).raise_for_status()
                        label = {"request_id": f"n{i}", "label": int(y[i])}
                        node.http.post("/predict/labels", json=label).raise_for_status()
                    time.sleep(1.5)  # the capture log is written about once a second
                    options = {"lr": opts.lr, "replay_share": opts.replay_share,
                               "seed": seed, "max_memory_mb": 2000.0}  # fmt: skip
                    t0 = time.perf_counter()
                    job = nt.start(client, node_id, model, opts.epochs, "captures",
                                   files=files, options=options)  # fmt: skip
                    job = nt.wait(client, job, 900)
                    job_s = time.perf_counter() - t0
                    active = node.status()["active"]
                    held_after = served_accuracy(node, *p["held"])
                    old_after = served_accuracy(node, *p["old"])
                finally:
                    node.stop()
    r = job.get("result") or {}
    lost = old_before - held_before
    return {
        "seed": seed, "model": model, "state": job["state"], "error": job.get("error"),
        "rebuilt": r.get("rebuilt"), "fp32_run": r.get("fp32"),
        "lineage": active.get("lineage"), "installed": r.get("installed"),
        "reason": r.get("reason"), "data_source": r.get("data_source"),
        "served_drifted_before": held_before, "served_drifted_after": held_after,
        "served_test_before": old_before, "served_test_after": old_after,
        "recovered_share": (held_after - held_before) / lost if lost > 0 else None,
        "served_forgetting_pp": 100 * (old_before - old_after),
        "worker": {k: r.get(k) for k in ("new_accuracy_before", "new_accuracy_after",
                   "old_accuracy_before", "old_accuracy_after", "forgetting_pp",
                   "new_train_samples", "new_holdout_samples", "epochs_run", "wall_seconds",
                   "worker_wall_s", "peak_rss_mb", "train_peak_rss_mb", "threads",
                   "export_wall_s", "export_run_s", "export_peak_rss_mb")},
        "job_seconds": job_s,
    }  # fmt: skip


def na(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | installed as | served drifted acc before -> after | recovered | served "
        "test acc before -> after | forgetting pp | training: run s / process s | export "
        "process s | peak RSS training / export process MiB | job s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["worker"]
        rec = "n/a" if r["recovered_share"] is None else f"{100 * r['recovered_share']:.0f} %"
        lines.append(
            f"| {r['seed']} | {r['lineage'] or r['state']} | {r['served_drifted_before']:.3f} -> "
            f"{r['served_drifted_after']:.3f} | {rec} | {r['served_test_before']:.3f} -> "
            f"{r['served_test_after']:.3f} | {r['served_forgetting_pp']:.1f} | "
            f"{(w['wall_seconds'] or 0):.1f} / {(w['worker_wall_s'] or 0):.1f} | "
            f"{na(w['export_wall_s'], '{:.1f}')} | {(w['peak_rss_mb'] or 0):.0f} / "
            f"{na(w['export_peak_rss_mb'], '{:.0f}')} | "
            f"{r['job_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--replay-share", type=float, default=0.75)
    ap.add_argument("--variant", action="store_true", help="serve and train the INT8 variant")
    ap.add_argument("--json", type=Path)
    opts = ap.parse_args()
    rows = [run_seed(seed, opts) for seed in opts.seeds]
    print(table(rows), file=sys.stderr)
    print(json.dumps(rows, indent=1, default=str))
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
