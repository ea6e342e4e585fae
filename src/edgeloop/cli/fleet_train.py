"""``edgeloop fleet train NODE MODEL``: on-device incremental training on a node, through the
control plane (control/train_api.py, agent/train_worker.py, docs/on_device.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, na


def fleet_train(
    node: Annotated[str, typer.Argument(help="The node's name or id.")],
    model: Annotated[str, typer.Argument(help="The version it serves, NAME:VERSION.")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the new data.")] = 10,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="'captures' (the node's own labelled captures) or an .npz file with x, y.",
        ),
    ] = "captures",
    lr: Annotated[float | None, typer.Option("--lr", help="Adam learning rate.")] = None,
    max_forgetting_pp: Annotated[
        float | None, typer.Option("--max-forgetting-pp", help="Reject above this (1.0).")
    ] = None,
    replay_share: Annotated[
        float | None, typer.Option("--replay-share", help="Share of each batch replayed.")
    ] = None,
    max_memory_mb: Annotated[
        float | None, typer.Option("--max-memory-mb", help="Worker RSS budget (400).")
    ] = None,
    timeout_s: Annotated[float, typer.Option("--timeout-s", help="Wait this long.")] = 600.0,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Fine-tune MODEL on NODE; an accepted run is installed there as a node-local version
    (NAME:V+NODE.N) through its updater; the figures come back. A node that cannot train or
    bad data exits non-zero with the error; a rejected run (forgetting) exits 0 and says why."""
    from edgeloop.core.errors import ConfigError
    from edgeloop.sdk import node_training as nt

    given = {"lr": lr, "max_forgetting_pp": max_forgetting_pp, "replay_share": replay_share,
             "max_memory_mb": max_memory_mb}  # fmt: skip
    options = {k: v for k, v in given.items() if v is not None}
    with _client(control, token, folder, home) as client:
        sha = "captures"
        if data != "captures":
            sha = _upload(client, Path(data))
        rows = [r for r in client.models() if str(r["ref"]) == model]
        if not rows:
            raise ConfigError(f"model {model!r} is not registered", hint="edgeloop fleet models")
        files = nt.reference_data(client, rows[0])
        job = nt.start(client, node, model, epochs, sha, files=files, options=options)
        job = nt.wait(client, job, timeout_s)
    nt.raise_failed(job)
    doc = nt.summary(job)

    def render(console: Console) -> None:
        t = Table(title=f"training {model} on {node}: {doc['state']}")
        t.add_column("figure")
        t.add_column("value")
        for key, value in doc.items():
            shown = na(value, "{:.4f}") if isinstance(value, float) else str(value)
            t.add_row(key, shown)
        console.print(t)

    emit(doc, format, render)


def _upload(client: Any, path: Path) -> str:
    """The .npz's sha256 once stored (checked for x and y here first)."""
    import numpy as np

    from edgeloop.core.errors import DataError
    from edgeloop.sdk import node_training as nt

    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"--data {str(path)!r} is not an .npz with arrays x and y ({exc})",
            hint="write it with numpy.savez(path, x=samples, y=labels), or pass --data captures",
        ) from exc
    return nt.put_npz(client, x, y, path.name)


# Last: the shared option types and the client live in cli/fleet.py (as for fleet_monitor).
from edgeloop.cli.fleet import ControlUrl, Folder, Format, Home, Token, _client  # noqa: E402
