"""Which INT8 edge variants a node can train (issue 13 part 6): a variant whose recipe has a
torch-side step, a foreign format or no recipe is refused, naming the recipe. The variant's
training across real processes is in tests/agent/test_node_training.py (it shares that module's
control plane and node).
"""

from __future__ import annotations

import pytest

from edgeloop.core.errors import ConfigError
from edgeloop.optimize.rebuild import rebuild_plan


@pytest.mark.parametrize(
    ("recipe", "fmt", "says"),
    [
        ({"recipe": "qat"}, "onnx", "step(s) qat a node cannot redo"),
        ({"recipe": "static-int8"}, "tflite", "is a tflite file"),
        ({"recipe": "fp32"}, "onnx", "its parent's FP32 file"),
        ({}, "onnx", "records no optimization recipe"),
    ],
)
def test_a_variant_a_node_cannot_rebuild_is_refused_naming_its_recipe(
    recipe: dict[str, str], fmt: str, says: str
) -> None:
    with pytest.raises(ConfigError, match="model m-edge:1") as refused:
        rebuild_plan(recipe, fmt, "m-edge:1")
    assert says in str(refused.value)
    assert str(rebuild_plan({"recipe": "dynamic-int8+static-int8"}, "onnx", "x:1")) == (
        "dynamic-int8+static-int8"
    )
