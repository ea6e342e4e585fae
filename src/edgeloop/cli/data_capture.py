"""``edgeloop data capture MODEL --out-name NAME``: captured samples -> a stored data set version.

From the fleet (the default): the control plane assembles what its nodes captured
(``POST /api/v1/datasets/captures``) and stores the version in its registry. From a standalone
server: ``--from captures.jsonl`` (what ``edgeloop serve --capture`` wrote) is assembled here
and stored in the registry of ``--home``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeloop.cli.data_stored import Home
from edgeloop.cli.fleet import ControlUrl, Token, _client
from edgeloop.cli.output import OutputFormat, emit

_LOCAL = "local"  # the node id of rows from a standalone server's file


def capture(
    model: Annotated[str, typer.Argument(help="The served model whose captures to assemble.")],
    out_name: Annotated[
        str, typer.Option("--out-name", help="Data set name; the version is the next one.")
    ],
    version: Annotated[
        str | None, typer.Option("--version", help="Only rows served by this model version.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="RFC 3339 time, e.g. 2026-12-07T00:00:00Z.")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="RFC 3339 time (excluded).")] = None,
    node: Annotated[
        list[str] | None, typer.Option("--node", help="Only these node ids (repeat).")
    ] = None,
    reason: Annotated[
        list[str] | None,
        typer.Option("--reason", help="Only rows kept for these reasons (repeat)."),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option("--from", help="A JSON Lines file of `edgeloop serve --capture` instead."),
    ] = None,
    control: ControlUrl = None,
    token: Token = None,
    home: Home = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="table or json")] = (
        OutputFormat.TABLE
    ),
) -> None:
    """Assemble captured samples (with the labels posted for them) into a new, immutable data
    set version with its provenance: nodes, model version(s), reasons, time range."""
    body: dict[str, Any] = {"model": model, "name": out_name, "version": version,
                            "since": since, "until": until, "nodes": node or [],
                            "reasons": reason or []}  # fmt: skip
    if source is not None:
        made = _from_file(source, body, home)
    else:
        with _client(control, token, None, home) as client:
            body = {k: v for k, v in body.items() if v is not None}
            made = client.call("POST", "/api/v1/datasets/captures", json=body)
    emit(made, format, lambda console: _render(console, made))


def _from_file(path: Path, body: dict[str, Any], home: Path | None) -> dict[str, Any]:
    """Assemble ``path``'s records here and store the version in ``home``'s registry.

    Raises:
        NotFoundError: no such file. DataError: a line that is not JSON (named), no match.
        BadRequestError / ConfigError: a bad option value (named).
    """
    from datetime import datetime

    import orjson

    from edgeloop.control import captures
    from edgeloop.control.captures_api import CaptureDatasetBody, to_query
    from edgeloop.control.schemas import parse
    from edgeloop.core.errors import DataError, NotFoundError
    from edgeloop.core.settings import Settings
    from edgeloop.registry.dataset_library import DatasetLibrary

    if not path.is_file():
        raise NotFoundError(
            f"no capture file {str(path)!r}", hint="`edgeloop serve --capture-out` names it"
        )
    query = to_query(parse(CaptureDatasetBody, orjson.dumps(body)))
    found: list[captures.Captured] = []
    labels: dict[tuple[str, str], int] = {}
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                record = orjson.loads(line) if line.strip() else {}
            except orjson.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno} is not JSON: {exc}") from exc
            if not isinstance(record, dict) or record.get("model") != query.model:
                continue
            if record.get("type") == "label" and isinstance(record.get("label"), int):
                labels[(_LOCAL, str(record.get("sample_id")))] = int(record["label"])
            elif record.get("type") == "sample":
                at = datetime.fromisoformat(str(record.get("at"))).timestamp()
                if captures.wanted(query, at, record):
                    found.append(captures.Captured(_LOCAL, record))
    classes = captures.class_names((), captures.output_width(found))
    assembled = captures.assemble(query, found, labels, classes)
    with DatasetLibrary.open(Settings.load(home)) as library:
        version = library.add(body["name"], assembled.samples, assembled.provenance)
    return {**version.to_dict(), "captured": assembled.to_dict()}


def _render(console: Any, made: dict[str, Any]) -> None:
    captured = made["captured"]
    span = made["provenance"]["time_range"] or ["n/a", "n/a"]
    console.print(
        f"stored {made['ref']}: {made['samples']:,} samples ({made['labelled']:,} labelled) "
        f"from {len(captured['by_node'])} node(s), model {made['provenance']['model']} "
        f"version(s) {', '.join(captured['model_versions'])}; reasons "
        + ", ".join(f"{k} {v}" for k, v in sorted(captured["by_reason"].items()))
        + f"; captured {span[0]} .. {span[1]}",
        highlight=False,
    )
