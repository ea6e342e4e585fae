"""How commands print: a rich table for people, one JSON object for scripts (``--format json``)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from rich.console import Console


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


# Status and progress go to stderr so stdout carries only the result (one JSON object).
err_console = Console(stderr=True)
out_console = Console()


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf: a figure that is not finite is reported as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def emit(result: Mapping[str, Any], fmt: OutputFormat, render: Callable[[Console], None]) -> None:
    """Print ``result`` as JSON, or call ``render`` to draw it for a person."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps(_clean(result), indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()
    else:
        render(out_console)


def na(value: float | int | None, fmt: str = "{:.3f}", reason: str = "n/a") -> str:
    """Format a figure, or say ``n/a`` when it was not measured."""
    return reason if value is None else fmt.format(value)
