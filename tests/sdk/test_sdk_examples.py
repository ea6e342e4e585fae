"""Every example of docs/sdk.md, run in order against one real local fleet.

The page's ```python blocks run in one namespace, as a user would paste them. A block that
starts with ``# not built yet: raises ErrorName`` must raise that error (the calls the fleet
cannot do yet say so instead of inventing a figure).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from edgeloop.core import errors
from edgeloop.core.types import Manifest
from edgeloop.sdk.local_fleet import LocalFleet
from edgeloop.sdk.manager import EdgeMLManager
from edgeloop.sdk.site import Site, save_site

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
NOT_BUILT = re.compile(r"# not built yet: raises (\w+)")
# digits pixels are 0..1; an 8-bit grey image is 0..255
PREPROCESSING = {"size": [8, 8], "mode": "L", "layout": "NCHW", "scale": 1.0 / 255.0}


def register_digits_mlp(edge: EdgeMLManager, work: Path) -> None:
    """``digits-mlp:1``: a torch MLP trained on digits, published with its checkpoint, data
    set, a benchmark of the file and how an image becomes its input."""
    pytest.importorskip("torch_pruning")
    from tests.optimize.torch_parents import digits_splits, trained_parent

    from edgeloop.bench.measure import benchmark
    from edgeloop.formats.onnx_info import inspect_onnx

    splits = digits_splits()
    parent = trained_parent(work, splits, arch="mlp", width=32, epochs=3)
    info = inspect_onnx(parent.onnx)
    measured = benchmark(parent.onnx, runs=20, warmup=2, data=splits.test, split_name="test")
    manifest = Manifest(
        name="digits-mlp", format="onnx", dataset="digits", inputs=info.inputs,
        outputs=info.outputs, measurements=(measured,),
        recipe={"preprocessing": PREPROCESSING},
    )  # fmt: skip
    edge.control.publish_model(parent.onnx, manifest, checkpoint=parent.checkpoint)


def wait_federated_workers(edge: EdgeMLManager, n: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        clients = edge.control.call("GET", "/api/v1/fl/clients")["clients"]
        if sum(c["eligible"] for c in clients) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} federated workers polled within {timeout_s} s")


def test_every_example_of_the_sdk_page_runs_in_order(
    fleet: LocalFleet,
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from PIL import Image

    save_site(Site("factory-edge-01", fleet.control_url, fleet.admin_token))
    with EdgeMLManager("factory-edge-01") as setup:
        register_digits_mlp(setup, tmp_path)
        setup.deploy_model("digits-mlp", "node-camera-1", soak_s=0.5, timeout_s=60)
        wait_federated_workers(setup, 2)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((8, 8), 128, np.uint8), "L").save("frame_001.jpg")

    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 12
    namespace: dict[str, object] = {}
    for block in blocks:
        expected = NOT_BUILT.match(block)
        if expected is None:
            exec(compile(block, str(DOC), "exec"), namespace)
            continue
        with pytest.raises(getattr(errors, expected.group(1)), match="not built"):
            exec(compile(block, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "digits-mlp 1" in printed and "digits-mlp-int8" in printed
    assert "digits-mlp-pruned" in printed
    # the facts behind the printed figures
    p, r, nodes, b = namespace["p"], namespace["r"], namespace["nodes"], namespace["b"]
    assert b["throughput_fps"] > 0 and b["runs"] == 100  # type: ignore[index]
    assert (b["power_watts"] is None) == (b["power_reason"] is not None)  # type: ignore[index]
    assert p["pruned_parameters"] < p["original_parameters"]  # type: ignore[index]
    assert r["round"] == 1 and r["total_samples"] > 0 and r["aggregated_update"] > 0  # type: ignore[index]
    assert sorted(r["participants"]) == ["node-camera-1", "node-gateway-1"]  # type: ignore[index]
    for node in nodes["nodes"].values():  # type: ignore[index]
        assert 0 < node["memory_available"] <= node["memory_total"]
    t = namespace["t"]
    assert t["new_holdout_samples"] == 30 and 0 <= t["accuracy_after"] <= 1  # type: ignore[index]
    assert (t["ref"] is not None) == t["accepted"]  # type: ignore[index]
    namespace["edge"].close()  # type: ignore[attr-defined]
