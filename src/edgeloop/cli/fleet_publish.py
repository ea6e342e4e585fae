"""``edgeloop fleet publish``: a local registry version (or a model file) onto the control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgeloop.cli.fleet_options import ControlUrl, Folder, Format, Home, Token, admin_client
from edgeloop.cli.output import OutputFormat, emit, err_console


def fleet_publish(
    model: Annotated[
        str,
        typer.Argument(
            help="A local registry ref NAME:VERSION (published with its manifest, keeping its "
            "name and version), or a model file to upload as the next version of --name."
        ),
    ],
    name: Annotated[str | None, typer.Option("--name", help="Model name (files only).")] = None,
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Manifest JSON (Manifest.to_dict form; files only)."),
    ] = None,
    with_parents: Annotated[
        bool,
        typer.Option(
            "--with-parents", help="Publish the ref's ancestors first (those not on the fleet)."
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Torch checkpoint folder the file was exported from (files only)."),
    ] = None,
    control: ControlUrl = None,
    token: Token = None,
    folder: Folder = None,
    home: Home = None,
    format: Format = OutputFormat.TABLE,
) -> None:
    """Publish a local registry version on the control plane under the same NAME:VERSION (or
    upload a model file as the next version of its name)."""
    from edgeloop.cli.registry import build_manifest

    if Path(model).is_file():
        value = build_manifest(Path(model), name, manifest)
        with admin_client(control, token, folder, home) as client:
            version = client.publish_model(Path(model), value, checkpoint=checkpoint)
        err_console.print(
            f"note: the control plane numbered it {version['ref']}, which may name another "
            "model in your local registry; to keep one identity, `edgeloop registry publish` "
            "the file and then `edgeloop fleet publish NAME:VERSION`",
            highlight=False,
        )
        emit(version, format, lambda c: c.print(f"published {version['ref']}"))
        return
    steps = publish_ref(model, with_parents, name or manifest, control, token, folder, home)
    body = {**steps[-1], "steps": steps}

    def render(console: Console) -> None:
        for step in steps:
            console.print(f"{step['ref']}: {step['status']} (sha256 {step['sha256'][:12]}...)")

    emit(body, format, render)


def publish_ref(
    text: str,
    with_parents: bool,
    renamed: object,
    control: str | None,
    token: str | None,
    folder: Path | None,
    home: Path | None,
) -> list[dict[str, Any]]:
    """Publish local version ``text`` (and, ``with_parents``, its ancestors root first);
    ``renamed``: --name or --manifest, which a ref refuses (it keeps its own)."""
    from edgeloop.core.errors import ConfigError
    from edgeloop.core.settings import Settings
    from edgeloop.registry.registry import Registry
    from edgeloop.registry.resolve import resolve_model

    settings = Settings.load(home)
    path, version = resolve_model(text, settings)  # lists what exists when the ref is unknown
    if version is None:
        raise ConfigError(
            f"{str(path)!r} is a folder, not a model file or a registry ref",
            hint="give a model file, or NAME:VERSION from `edgeloop registry list`",
        )
    if renamed:
        raise ConfigError(
            f"{text!r} is a registry ref: it is published with its own name and manifest",
            hint="drop --name/--manifest, or give a model file to publish it under a new name",
        )
    with Registry.open(settings) as registry:
        chain = registry.lineage(version.ref) if with_parents else [version]
        shas = {v.ref: v.artifact_sha256 for v in chain}
        if not with_parents and version.manifest.parent is not None:
            shas[version.manifest.parent] = registry.show(version.manifest.parent).artifact_sha256
        files = [registry.resolve(v.ref)[1] for v in chain]
        profiles = [registry.profile(v.ref)[1] for v in chain]  # verified; None: it has none
    steps: list[dict[str, Any]] = []
    with admin_client(control, token, folder, home) as client:
        for v, file, profile in reversed(list(zip(chain, files, profiles, strict=True))):
            parent = v.manifest.parent
            parent_sha = None if parent is None else shas.get(parent)
            step = client.publish_version(file, v, parent_sha, profile=profile)
            steps.append(step)
            err_console.print(f"{step['ref']}: {step['status']}", highlight=False)
    return steps
