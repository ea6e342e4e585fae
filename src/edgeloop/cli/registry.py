"""``edgeloop registry``: list, show, publish and remove model versions.

``rm`` always requires ``--yes``: removal cannot be undone, and a prompt would hang scripts
and CI, so there is no interactive confirmation to fall back on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.output import OutputFormat, emit, err_console, na
from edgeloop.core.errors import ConfigError, NotFoundError
from edgeloop.core.settings import Settings
from edgeloop.core.types import Manifest, ModelRef, shape_str

if TYPE_CHECKING:  # the registry pulls SQLAlchemy: import it only when a command runs
    from edgeloop.registry.registry import Registry
    from edgeloop.registry.store import ModelVersion

app = typer.Typer(
    help="Model registry: publish, list, show and remove model versions.",
    no_args_is_help=True,
)

Home = Annotated[
    Path | None,
    typer.Option("--home", help="edgeloop home folder [default: $EDGELOOP_HOME or ~/.edgeloop]"),
]
Format = Annotated[
    OutputFormat, typer.Option("--format", help="table for people, json (one object) for scripts")
]
Ref = Annotated[str, typer.Argument(help="NAME or NAME:VERSION (latest when no version)")]


def _open(home: Path | None) -> Registry:
    from edgeloop.registry.registry import Registry

    return Registry.open(Settings.load(home))


@app.command("list")
def list_versions(
    name: Annotated[str | None, typer.Option("--name", help="only versions of this model")] = None,
    home: Home = None,
    fmt: Format = OutputFormat.TABLE,
) -> None:
    """List registered model versions, by name then version."""
    with _open(home) as registry:
        versions = registry.list(name)
    emit({"versions": [v.to_dict() for v in versions]}, fmt, lambda c: _render_list(c, versions))


@app.command("show")
def show(ref: Ref, home: Home = None, fmt: Format = OutputFormat.TABLE) -> None:
    """Show one version: manifest, measurements and lineage (child first, up to the root)."""
    with _open(home) as registry:
        version = registry.show(ModelRef.parse(ref))
        lineage = registry.lineage(version.ref)
        present = registry.artifacts.exists(version.artifact_sha256)
        path = registry.artifacts.path(version.artifact_sha256) if present else None
    result = version.to_dict() | {
        "lineage": [str(v.ref) for v in lineage],
        "artifact_path": None if path is None else str(path),
    }
    emit(result, fmt, lambda c: _render_show(c, version, lineage, path))


@app.command("rm")
def remove(
    ref: Ref,
    yes: Annotated[bool, typer.Option("--yes", help="required: confirm the removal")] = False,
    home: Home = None,
    fmt: Format = OutputFormat.TABLE,
) -> None:
    """Remove one version (NAME:VERSION); its artifact goes too when no other version uses it."""
    parsed = ModelRef.parse(ref)
    if not yes:
        raise ConfigError(
            f"refusing to remove {ref!r} without --yes", hint=f"edgeloop registry rm {ref} --yes"
        )
    with _open(home) as registry:
        removed = registry.remove(parsed)
        deleted = not registry.artifacts.exists(removed.artifact_sha256)
    said = f"removed {removed.ref}" + (" and its artifact" if deleted else "")
    emit({"removed": removed.to_dict(), "artifact_deleted": deleted}, fmt, lambda c: c.print(said))


@app.command("publish")
def publish(
    model_file: Annotated[Path, typer.Argument(help="the model file to register")],
    name: Annotated[str | None, typer.Option("--name", help="model name")] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="manifest JSON file (Manifest.to_dict form)")
    ] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="NAME[:VERSION] derived from")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="the checkpoint it was exported from (`edgeloop train --out`): records its "
            "data hash, data set and loader options, recipe, labels and test metrics",
        ),
    ] = None,
    export_report: Annotated[
        Path | None,
        typer.Option(
            "--export-report",
            help="what `edgeloop export --format json` printed for this file: records its parity",
        ),
    ] = None,
    bench_report: Annotated[
        list[Path] | None,
        typer.Option(
            "--bench-report",
            help="what `edgeloop bench --format json` printed for this file: records the "
            "measurement (repeatable)",
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            "--profile",
            help="a reference profile file (ReferenceProfile.to_bytes()) to ship with it; "
            "by default an ONNX model given --checkpoint is profiled on its training split",
        ),
    ] = None,
    home: Home = None,
    fmt: Format = OutputFormat.TABLE,
) -> None:
    """Register a model file as the next version of its name.

    Without --manifest the file must be ONNX: it is checked, and its inputs and outputs are
    read from its graph. --checkpoint, --export-report and --bench-report add what training,
    export and bench found out about it; with --checkpoint the training split's inputs and
    the model's outputs on the validation split (with its labels) are profiled for the node's
    drift monitor.
    """
    from edgeloop.registry.evidence import with_evidence

    value = build_manifest(model_file, name, manifest)
    if parent is not None:
        value = dataclasses.replace(value, parent=ModelRef.parse(parent))
    value = with_evidence(value, model_file, checkpoint, export_report, bench_report or [])
    data = _profile_bytes(model_file, value, checkpoint, profile)
    with _open(home) as registry:
        version = registry.publish(model_file, value, profile=data)
    shipped = version.manifest.profile
    said = "" if shipped is None else f", profile {shipped.size_bytes} bytes"
    err_console.print(f"published {version.ref} ({version.size_bytes} bytes{said})")
    emit(version.to_dict(), fmt, lambda c: _render_list(c, [version]))


@app.command("profile")
def profile_out(
    ref: Ref,
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the profile (.npz)")],
    home: Home = None,
    fmt: Format = OutputFormat.TABLE,
) -> None:
    """Write a version's reference profile (for `edgeloop serve --profile MODEL=FILE`)."""
    with _open(home) as registry:
        version, path = registry.profile(ModelRef.parse(ref))
        if path is None:
            raise NotFoundError(
                f"{version.ref} has no reference profile",
                hint="publish it with --checkpoint DIR (or --profile FILE) to make one",
            )
        data = path.read_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    record = version.manifest.profile
    body = {"ref": str(version.ref), "out": str(out), **(record.to_dict() if record else {})}
    emit(body, fmt, lambda c: c.print(f"wrote the profile of {version.ref} to {out}"))


def _profile_bytes(
    model_file: Path, manifest: Manifest, checkpoint: Path | None, given: Path | None
) -> bytes | None:
    """The profile to publish: the file given, else one made from the checkpoint's data."""
    if given is not None:
        try:
            return given.read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"profile file {str(given)!r} does not exist") from exc
    if checkpoint is None or manifest.format != "onnx":
        return None
    from edgeloop.registry.profiles import profile_dataset, splits_of_checkpoint

    with err_console.status("profiling the training and validation splits for the monitor"):
        splits = splits_of_checkpoint(checkpoint)
        return profile_dataset(model_file, splits.train, splits.val)


def build_manifest(model_file: Path, name: str | None, manifest: Path | None) -> Manifest:
    """The manifest to publish ``model_file`` under: from a JSON file, or read off an ONNX graph."""
    if manifest is not None:
        loaded = _load_manifest(manifest)
        return loaded if name is None else dataclasses.replace(loaded, name=name)
    if model_file.suffix.lower() != ".onnx":
        raise ConfigError(
            f"{str(model_file)!r} is not an .onnx file, so its inputs and outputs are unknown",
            hint="pass --manifest FILE.json describing it",
        )
    if name is None:
        raise ConfigError("publishing without --manifest needs --name", hint="add --name NAME")
    from edgeloop.formats.onnx_info import inspect_onnx  # imports onnx: only this path needs it

    info = inspect_onnx(model_file)
    return Manifest(name=name, format="onnx", inputs=info.inputs, outputs=info.outputs)


def _load_manifest(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Manifest.from_dict(data)
    except FileNotFoundError as exc:
        raise NotFoundError(f"manifest file {str(path)!r} does not exist") from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"manifest file {str(path)!r} is not a valid manifest: {exc!r}",
            hint="write the JSON form of Manifest.to_dict(): name, format, inputs, outputs, ...",
        ) from exc


def _render_list(console: Console, versions: list[ModelVersion]) -> None:
    if not versions:
        console.print("no model versions registered")
        return
    table = Table("ref", "format", "size (bytes)", "sha256", "created (UTC)", "parent")
    for v in versions:
        parent = v.manifest.parent
        table.add_row(
            str(v.ref),
            v.manifest.format,
            str(v.size_bytes),
            v.artifact_sha256[:12],
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "-" if parent is None else str(parent),
        )
    console.print(table)


def _render_show(
    console: Console, v: ModelVersion, lineage: list[ModelVersion], path: Path | None
) -> None:
    m = v.manifest
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column(overflow="fold")  # hashes and paths are copied whole, never cut with "…"
    rows = {
        "ref": str(v.ref),
        "format": m.format,
        "artifact": f"{v.artifact_sha256} ({v.size_bytes} bytes)",
        "path": "missing" if path is None else str(path),
        "created": v.created_at.isoformat(),
        "inputs": ", ".join(f"{t.name} {shape_str(t.shape)} {t.dtype}" for t in m.inputs),
        "outputs": ", ".join(f"{t.name} {shape_str(t.shape)} {t.dtype}" for t in m.outputs),
        "data": f"{m.dataset or 'n/a'} (sha256 {m.source_data_hash or 'n/a'})",
        "parity": "n/a" if m.parity is None else json.dumps(m.parity.to_dict()),
        "recipe": json.dumps(dict(m.recipe), sort_keys=True),
        "tools": ", ".join(f"{k} {val}" for k, val in sorted(m.tools.items())) or "n/a",
        "lineage": " <- ".join(str(x.ref) for x in lineage),
        "profile": "n/a (none made)" if m.profile is None else _profile_text(m),
    }
    for key, text in rows.items():
        info.add_row(key, text)
    console.print(info)
    if m.measurements:
        console.print(_measurements_table(v))


def _profile_text(m: Manifest) -> str:
    p = m.profile
    assert p is not None
    return (
        f"{p.sha256} ({p.size_bytes} bytes, format {p.format_version}, "
        f"{p.rows} reference rows of {p.dataset or 'n/a'})"
    )


def _measurements_table(v: ModelVersion) -> Table:
    table = Table("engine", "batch", "p50 ms", "p99 ms", "per s", "accuracy", "power W", "cpu")
    for x in v.manifest.measurements:
        accuracy = na(x.accuracy, "{:.4f}")
        table.add_row(
            f"{x.engine}/{x.provider}",
            str(x.batch_size),
            f"{x.latency_ms.p50:.3f}",
            f"{x.latency_ms.p99:.3f}",
            f"{x.throughput_per_s:.1f}",
            accuracy if x.accuracy_split is None else f"{accuracy} ({x.accuracy_split})",
            na(x.power_w, "{:.2f}", x.power_source),
            x.cpu,
        )
    return table
