"""Every example of docs/sdk.md, run in order against a real local fleet.

The page's ```python blocks run in one namespace, as a user would paste them. A block that
starts with ``# not built yet: raises ErrorName`` must raise that error (the calls the fleet
cannot do yet say so instead of inventing a figure).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.sdk.digits_model import digits_onnx

from edgeloop.core import errors
from edgeloop.core.types import Manifest, TensorSpec
from edgeloop.sdk.local_fleet import LocalFleet
from edgeloop.sdk.manager import EdgeMLManager
from edgeloop.sdk.site import Site, save_site

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
NOT_BUILT = re.compile(r"# not built yet: raises (\w+)")


def test_every_example_of_the_sdk_page_runs_in_order(
    fleet: LocalFleet, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_site(Site("factory-edge-01", fleet.control_url, fleet.admin_token))
    manifest = Manifest(
        name="digits-mlp", format="onnx", dataset="digits",
        inputs=(TensorSpec("input", (None, 1, 8, 8), "float32"),),
        outputs=(TensorSpec("output", (None, 10), "float32"),),
    )  # fmt: skip
    with EdgeMLManager("factory-edge-01") as setup:
        setup.control.publish_model(digits_onnx(tmp_path / "digits-mlp.onnx"), manifest)
        setup.deploy_model("digits-mlp", "node-1", soak_s=0.5, timeout_s=60)

    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 12
    namespace: dict[str, object] = {}
    for block in blocks:
        expected = NOT_BUILT.match(block)
        if expected is None:
            exec(compile(block, str(DOC), "exec"), namespace)
            continue
        with pytest.raises(getattr(errors, expected.group(1)), match="not built|no torch"):
            exec(compile(block, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "digits-mlp 1" in printed and "digits-mlp-int8" in printed
    namespace["edge"].close()  # type: ignore[attr-defined]
