"""Are `edgeloop bench` latency figures reproducible? Two runs, two fresh processes, one model.

Done-criterion of the bench issue: two runs of the same model agree on p50 within 15 %.
This script runs ``edgeloop bench MODEL --format json`` twice, each in a new process, and prints
both p50s and their ratio (slower / faster). Exit status 0 when the ratio is <= 1.15, else 1.

    .venv/bin/python bench/repeatability.py [MODEL.onnx] [--runs N] [--batch-size B]

Without MODEL it builds a small MLP (256-512-512-10, ReLU, ~0.4 M parameters) in a temporary
folder; its weights come from a seeded generator because they are model content, not figures.
This is a benchmark, not a unit test: its outcome depends on the machine and its load, so the
load average before each run is printed with the result. ``--threads 1`` takes the CPU-count
contention with other processes out of the comparison on a small shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

TOLERANCE = 1.15  # the "within 15 %"


def build_mlp(path: Path, sizes: tuple[int, ...] = (256, 512, 512, 10)) -> Path:
    """Write a ReLU MLP with a free batch axis to ``path``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)  # weights of the test model, not a measured figure
    nodes, inits, prev = [], [], "input"
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}"),
        ]
        nodes += [helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"h{i}"])]
        prev = f"h{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["output"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def bench_command() -> list[str]:
    """The real `edgeloop` entry point when its `bench` command is wired, else the module."""
    script = Path(sys.executable).with_name("edgeloop")
    exe = str(script) if script.exists() else shutil.which("edgeloop")
    if exe:
        probe = subprocess.run(
            [exe, "bench", "--help"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [exe, "bench"]
    print(
        "note: `edgeloop bench` is not wired here; running edgeloop.cli.bench directly",
        file=sys.stderr,
    )
    return [
        sys.executable,
        "-c",
        "import typer; from edgeloop.cli.bench import bench; typer.run(bench)",
    ]


def load() -> str:
    """The 1-minute load average over the CPU count: above 1, runs queue for a core."""
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def run_once(command: list[str], model: Path, args: argparse.Namespace) -> dict[str, Any]:
    threads = [] if args.threads is None else ["--threads", str(args.threads)]
    argv = [
        *command,
        str(model),
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--format",
        "json",
        *threads,
    ]
    before = load()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"edgeloop bench failed (exit {done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["load_before"] = before
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="ONNX model (default: a built MLP)")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="default: edgeloop's choice")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeloop-repeat-") as tmp:
        model = args.model or build_mlp(Path(tmp) / "mlp.onnx")
        command = bench_command()
        first, second = (run_once(command, model, args) for _ in range(2))
    p50s = [first["latency_ms"]["p50"], second["latency_ms"]["p50"]]
    ratio = max(p50s) / min(p50s)
    verdict = "PASS" if ratio <= TOLERANCE else "FAIL"
    print(f"model      {model if args.model else 'built MLP 256-512-512-10'}")
    print(
        f"machine    {first['cpu']}, {first['threads']} threads, batch {first['batch_size']}, "
        f"{first['runs']} runs after {first['warmup']} warm-up, each in a fresh process"
    )
    for i, run in enumerate((first, second), start=1):
        print(
            f"run {i} p50  {run['latency_ms']['p50']:.4f} ms  (load before: {run['load_before']})"
        )
    print(f"ratio      {ratio:.3f} (slower / faster; must be <= {TOLERANCE})  {verdict}")
    return 0 if ratio <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
