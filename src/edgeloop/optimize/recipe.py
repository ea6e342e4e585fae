"""Recipes: chains of optimization steps written as text, e.g.
``prune-structured(ratio=0.5)+static-int8(per_channel=true)``.

Each step names a registered method and its settings; values are JSON scalars (numbers, true /
false, strings). ``fp32`` alone is the empty recipe: the parent model as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeloop.core.errors import ConfigError
from edgeloop.data.dataset import Splits
from edgeloop.optimize.base import ModelSource, Variant, create

_STEP = re.compile(r"^\s*([a-z0-9][a-z0-9-]*)\s*(?:\((.*)\))?\s*$")
BASELINE = "fp32"


@dataclass(frozen=True, slots=True)
class Step:
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.method
        args = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(self.params.items()))
        return f"{self.method}({args})"


@dataclass(frozen=True, slots=True)
class Recipe:
    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """Parse ``a(k=v)+b``; ``fp32`` is the empty recipe. Errors name the bad part."""
        if text.strip() == BASELINE:
            return cls(())
        steps = []
        for part in _split_steps(text):
            m = _STEP.match(part)
            if not m:
                raise ConfigError(
                    f"recipe step {part!r} in {text!r} is not METHOD or METHOD(key=value,...)",
                    hint="e.g. prune-structured(ratio=0.5)+static-int8",
                )
            steps.append(Step(m.group(1), _parse_params(m.group(2) or "", part)))
        return cls(tuple(steps))

    def __str__(self) -> str:
        return "+".join(str(s) for s in self.steps) if self.steps else BASELINE

    @property
    def needs_checkpoint(self) -> bool:
        return any(create(s.method, **s.params).needs_checkpoint for s in self.steps)


def _split_steps(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "+" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _parse_params(body: str, part: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in body.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"setting {item!r} in recipe step {part!r} is not key=value")
        try:
            params[key.strip()] = json.loads(raw.strip())
        except json.JSONDecodeError:
            params[key.strip()] = raw.strip()  # a bare word is a string: calibrate=entropy
    return params


def run_recipe(recipe: Recipe, source: ModelSource, splits: Splits, out_dir: Path) -> list[Variant]:
    """Apply each step to the previous step's output; return every intermediate variant.

    Raises:
        EdgeError: from the step that failed (its message names the method and what to fix).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    variants: list[Variant] = []
    current = source
    for i, step in enumerate(recipe.steps, start=1):
        optimizer = create(step.method, **step.params).fit(splits)
        variant = optimizer.apply(current, out_dir / f"{i:02d}-{step.method}.onnx")
        variants.append(variant)
        # An ONNX-only step (quantization) leaves no torch weights that match its output, so a
        # later weight-changing step must not silently start from the pre-quantization weights.
        current = ModelSource(variant.path, variant.checkpoint, source.name)
    return variants
