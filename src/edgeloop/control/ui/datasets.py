"""Data sets and the label queue: the stored versions of the registry's data set store
(docs/data.md), one version with its provenance and counts, and the versions with samples
still to label, whose tasks download as ``edgeloop data label export`` writes them.

The pages read the store the CLI and ``POST /api/v1/datasets/captures`` write
(:class:`~edgeloop.registry.dataset_library.DatasetLibrary` on the registry's database and
artifact store: one engine of its own, closed with the plane). Importing answers stays on the
CLI (``edgeloop data label import``).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edgeloop.control.plane import ControlPlane
from edgeloop.control.ui import security
from edgeloop.control.ui.html import Html, escape, join, url
from edgeloop.control.ui.layout import View
from edgeloop.control.ui.sessions import Session
from edgeloop.control.ui.widgets import link, note, pairs, section, table
from edgeloop.core.errors import ConfigError
from edgeloop.data.labels import LabelFormat, write_tasks
from edgeloop.data.samples import UNLABELLED
from edgeloop.registry.artifacts import open_artifacts
from edgeloop.registry.dataset_library import DatasetLibrary
from edgeloop.registry.dataset_stores import SqlDatasetStore
from edgeloop.registry.datasets import DatasetRef, DatasetVersion

LISTED = 500  # versions on the data sets page, newest first
CLASS_COUNTS_BYTES = 64 << 20  # a version's page counts labels per class up to this size
SUFFIX = {LabelFormat.LABEL_STUDIO: "json", LabelFormat.CSV: "csv"}


def data_routes(plane: ControlPlane, guarded: Callable[[Any], Any]) -> list[BaseRoute]:
    """``/ui/datasets``, ``/ui/datasets/{name}/{version}``, its ``/tasks`` and ``/ui/labels``."""
    pages, g = DatasetPages(plane), guarded
    return [
        Route("/datasets", g(pages.list), methods=["GET"]),
        Route("/datasets/{name}/{version}", g(pages.detail), methods=["GET"]),
        Route("/datasets/{name}/{version}/tasks", g(pages.tasks), methods=["GET"]),
        Route("/labels", g(pages.queue), methods=["GET"]),
    ]


def _ref(request: Request) -> DatasetRef:
    """The ``{name}/{version}`` of the URL. Raises ConfigError (400) naming a bad one."""
    name, version = request.path_params["name"], request.path_params["version"]
    if not version.isdigit():
        raise ConfigError(
            f"data set version {version[:20]!r} is not a number",
            hint="the data sets page links each version",
        )
    return DatasetRef(name, int(version))


def _span(v: DatasetVersion) -> str:
    span = v.entry.provenance.time_range
    if span is None:
        return "n/a"
    return f"{span[0].isoformat(timespec='seconds')} .. {span[1].isoformat(timespec='seconds')}"


def _nodes(v: DatasetVersion, shown: int = 3) -> str:
    ids = v.entry.provenance.node_ids
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return (", ".join(ids[:shown]) + more) or "none"


def _downloads(v: DatasetVersion) -> Html:
    items = [
        link(url("datasets", v.name, v.version, "tasks", format=f.value), label)
        for f, label in ((LabelFormat.LABEL_STUDIO, "Label Studio tasks"), (LabelFormat.CSV, "CSV"))
    ]
    return join(items, " · ")


class DatasetPages:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        store = SqlDatasetStore(plane.settings.db_url)  # its own engine: closed with the plane
        plane.on_close(store.close)
        self.library = DatasetLibrary(store, open_artifacts(plane.settings))

    async def list(self, request: Request, session: Session) -> View:
        found = await run_in_threadpool(self.library.list)
        found.sort(key=lambda v: v.created_at, reverse=True)
        rows = [
            (
                link(url("datasets", v.name, v.version), str(v.ref)),
                v.entry.samples,
                v.entry.labelled,
                v.entry.unlabelled,
                v.entry.modality.value,
                v.entry.provenance.model or "n/a",
                _nodes(v),
                ", ".join(v.entry.provenance.reasons) or "n/a",
                _span(v),
                v.created_at.isoformat(timespec="seconds"),
            )
            for v in found[:LISTED]
        ]
        heads = ["Version", "Samples", "Labelled", "Unlabelled", "Modality", "Model"]
        heads += ["Nodes", "Capture reasons", "Captured", "Created"]
        shown = f"{len(rows)} of {len(found)} stored versions, newest first"
        body = join(
            [
                table(f"Data sets: {shown}", heads, rows, "no data set stored yet"),
                Html(
                    '<p class="note">Versions are immutable: labelling makes a new version whose '
                    "parent is the old one. <code>edgeloop data capture</code> turns the fleet's "
                    "captures into a version.</p>"
                ),
            ]
        )
        return View("Data sets", "datasets", body)

    async def detail(self, request: Request, session: Session) -> View:
        ref = _ref(request)
        v, classes = await run_in_threadpool(self._detail, ref)
        e, p = v.entry, v.entry.provenance
        facts = pairs(
            [
                ("Version", str(v.ref)),
                ("Samples", e.samples),
                ("Labelled", e.labelled),
                ("Unlabelled (in the label queue)", e.unlabelled),
                ("Sample shape", " x ".join(str(d) for d in e.sample_shape) or "scalar"),
                ("Modality", e.modality.value),
                ("Classes", ", ".join(e.classes) or "none"),
                ("Content hash (sha256)", e.content_hash),
                ("Size", f"{e.size_bytes} bytes"),
                ("Created", v.created_at.isoformat(timespec="seconds")),
            ]
        )
        parents = [link(url("datasets", r.name, r.version), str(r)) for r in p.parents]
        provenance = pairs(
            [
                ("Model version", p.model or "n/a"),
                ("Nodes", ", ".join(p.node_ids) or "none"),
                ("Capture reasons", ", ".join(p.reasons) or "n/a"),
                ("Captured (first .. last)", _span(v)),
                ("Parents", join(parents, ", ") if parents else "none"),
                ("Note", p.note or "none"),
            ]
        )
        if classes is None:
            per_class = note(
                f"n/a: the samples ({e.size_bytes} bytes) are over the "
                f"{CLASS_COUNTS_BYTES >> 20} MiB a page reads (edgeloop data show {v.ref} counts)"
            )
        else:
            per_class = table(
                "Labelled samples per class",
                ("Class", "Labelled samples"),
                [(c, classes.get(c, 0)) for c in e.classes],
            )
        tasks = Html(
            f"<p>{e.unlabelled} unlabelled sample(s) as tasks: {_downloads(v)} "
            f"(<code>edgeloop data label export {escape(str(v.ref))}</code> writes the same)</p>"
        )
        body = join(
            [
                section("Version", facts, "version"),
                section("Provenance", provenance, "provenance"),
                section("Labels", join([per_class, tasks]), "labels"),
            ]
        )
        return View(f"Data set {v.ref}", "datasets", body)

    def _detail(self, ref: DatasetRef) -> tuple[DatasetVersion, dict[str, int] | None]:
        v = self.library.get(ref)
        if v.entry.size_bytes > CLASS_COUNTS_BYTES:
            return v, None
        samples = self.library.samples(v.ref)
        counts = Counter(int(y) for y in samples.y if int(y) != UNLABELLED)
        return v, {c: counts.get(i, 0) for i, c in enumerate(samples.classes)}

    async def queue(self, request: Request, session: Session) -> View:
        found = await run_in_threadpool(self.library.list)
        newest: dict[str, DatasetVersion] = {}
        for v in found:  # ordered by name, then version: the last of a name is its newest
            newest[v.name] = v
        waiting = [v for v in newest.values() if v.entry.unlabelled > 0]
        waiting.sort(key=lambda v: v.entry.unlabelled, reverse=True)
        rows = [
            (
                link(url("datasets", v.name, v.version), str(v.ref)),
                v.entry.provenance.model or "n/a",
                v.entry.unlabelled,
                v.entry.samples,
                _downloads(v),
            )
            for v in waiting
        ]
        models: Counter[str] = Counter()
        for v in waiting:
            models[v.entry.provenance.model or "n/a"] += v.entry.unlabelled
        body = join(
            [
                section(
                    "Per data set",
                    table(
                        "The newest version of each data set with unlabelled samples, most first",
                        ("Version", "Model", "Unlabelled", "Samples", "Tasks"),
                        rows,
                        "nothing to label: every data set's newest version is labelled",
                    ),
                    "per-dataset",
                ),
                section(
                    "Per model",
                    table(
                        "Unlabelled samples per model version (the data sets above)",
                        ("Model version", "Unlabelled"),
                        models.most_common(),
                        "nothing to label",
                    ),
                    "per-model",
                ),
                Html(
                    '<p class="note">Answers come back with <code>edgeloop data label import '
                    "NAME:VERSION FILE</code> (a new version holds them).</p>"
                ),
            ]
        )
        return View("Label queue", "labels", body)

    async def tasks(self, request: Request, session: Session) -> Response:
        """The version's unlabelled samples as labelling tasks, as a download (a zip when
        Label Studio tasks come with image files)."""
        ref = _ref(request)
        given = request.query_params.get("format") or LabelFormat.LABEL_STUDIO.value
        if given not in {f.value for f in LabelFormat}:
            raise ConfigError(
                f"format {given[:40]!r} is not a task format; expected one of "
                f"{[f.value for f in LabelFormat]}"
            )
        fmt = LabelFormat(given)
        name, body, kind = await run_in_threadpool(self._tasks, ref, fmt)
        headers = {**security.HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
        return Response(body, 200, headers, kind)

    def _tasks(self, ref: DatasetRef, fmt: LabelFormat) -> tuple[str, bytes, str]:
        v = self.library.get(ref)
        samples = self.library.samples(v.ref)
        stem = f"{v.name}-{v.version}-tasks"
        with tempfile.TemporaryDirectory(prefix="edgeloop-tasks-") as folder:
            out = Path(folder) / f"{stem}.{SUFFIX[fmt]}"
            write_tasks(samples, out, fmt)
            files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
            if files == [out]:
                kind = "text/csv" if fmt is LabelFormat.CSV else "application/json"
                return out.name, out.read_bytes(), kind
            packed = io.BytesIO()
            with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
                for f in files:
                    archive.write(f, f.relative_to(folder).as_posix())
            return f"{stem}.zip", packed.getvalue(), "application/zip"
