"""The model and monitoring pages' pure parts: the lineage graph (build, layout, SVG), the
Pareto front of a small known set of variants, and the drift chart's time bins."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from edgeloop.control.monitoring import Mark, Snapshot
from edgeloop.control.ui import drift, lineage, pareto
from edgeloop.core.types import Latency, Manifest, Measurement, ModelRef, TensorSpec
from edgeloop.registry.store import ModelVersion
from edgeloop.serving.watch import EventType

EVIL = "<script>alert(1)</script>"


def _measured(latency: float, accuracy: float | None, batch: int = 1) -> Measurement:
    return Measurement(
        model="m", engine="onnxruntime", provider="cpu", batch_size=batch, runs=100,
        latency_ms=Latency(latency, latency, latency), throughput_per_s=1000 / latency,
        peak_rss_mb=None, size_bytes=1, accuracy=accuracy,
        accuracy_split=None if accuracy is None else "digits test",
        power_w=None, power_source="no meter", cpu="test", threads=1,
    )  # fmt: skip


def version(
    ref: str,
    parent: str | None = None,
    recipe: dict[str, Any] | None = None,
    measured: tuple[Measurement, ...] = (),
    size: int = 1000,
) -> ModelVersion:
    r = ModelRef.parse(ref)
    assert r.version is not None
    manifest = Manifest(
        name=r.name, format="onnx",
        inputs=(TensorSpec("input", (None, 4), "float32"),),
        outputs=(TensorSpec("output", (None, 3), "float32"),),
        recipe=recipe or {}, measurements=measured,
        parent=None if parent is None else ModelRef.parse(parent),
    )  # fmt: skip
    return ModelVersion(r.name, r.version, manifest, "0" * 64, size, datetime.now(UTC))


def tree() -> list[ModelVersion]:
    """kws:1 -> kws-int8:1 (tune, chosen) -> kws-int8-tflite:1 (convert); kws:1 -> kws:2
    (retrain job); kws:1 -> kws-fp16:1; and an unrelated model."""
    return [
        version("kws:1", measured=(_measured(10.0, 0.90),)),
        version("kws-int8:1", "kws:1", {"recipe": "static-int8", "objective": "latency"},
                (_measured(4.0, 0.89, batch=8), _measured(5.0, 0.89)), size=300),
        version("kws-int8-tflite:1", "kws-int8:1", {"target": "tflite-int8"}, size=280),
        version("kws:2", "kws:1", {"retrain": {"job_id": "abcdef0123456789"}},
                (_measured(10.0, 0.93),)),
        version("kws-fp16:1", "kws:1", {"optimize": {"method": "fp16"}},
                (_measured(12.0, 0.90),), size=500),
        version("other:1", measured=(_measured(1.0, 0.99),)),
    ]  # fmt: skip


def test_the_graph_holds_the_ancestors_and_descendants_with_what_made_each() -> None:
    graph = lineage.build(tree(), "kws-int8:1")
    assert [n.key for n in graph.nodes] == ["kws:1", "kws-int8:1", "kws-int8-tflite:1"]
    assert [n.key for n in graph.nodes if n.current] == ["kws-int8:1"]
    assert [(e.parent, e.child, e.label) for e in graph.edges] == [
        ("kws:1", "kws-int8:1", "static-int8"),
        ("kws-int8:1", "kws-int8-tflite:1", "convert to tflite-int8"),
    ]
    whole = lineage.build(tree(), "kws:1")
    assert {e.child: e.label for e in whole.edges} == {
        "kws-int8:1": "static-int8",
        "kws-fp16:1": "fp16",
        "kws:2": "retrain job abcdef01",
        "kws-int8-tflite:1": "convert to tflite-int8",
    }
    assert next(e for e in whole.edges if e.child == "kws:2").href == "/ui/jobs/abcdef0123456789"


def test_the_layout_is_a_tree_each_parent_over_its_children() -> None:
    where = lineage.layout(lineage.build(tree(), "kws:1"))
    # Children by name and version: kws:2, kws-fp16:1, kws-int8:1 (over its tflite child).
    assert where == {
        "kws:1": (1.0, 0),
        "kws:2": (0.0, 1),
        "kws-fp16:1": (1.0, 1),
        "kws-int8:1": (2.0, 1),
        "kws-int8-tflite:1": (2.0, 2),
    }
    chain = lineage.layout(lineage.build(tree(), "kws-int8-tflite:1"))
    assert chain == {"kws:1": (0.0, 0), "kws-int8:1": (0.0, 1), "kws-int8-tflite:1": (0.0, 2)}


def test_the_svg_links_every_version_and_escapes_every_label() -> None:
    versions = [*tree(), version("kws-x:1", "kws:1", {"recipe": EVIL})]
    graph = lineage.build(versions, "kws:1")
    svg = lineage.svg(graph, f"lineage {EVIL}")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    hrefs = re.findall(r'<a class="node[^"]*" href="([^"]+)"', svg)
    assert sorted(hrefs) == sorted(f"/ui/models/{n.key.replace(':', '/')}" for n in graph.nodes)
    assert svg.count('aria-current="page"') == 1
    table = lineage.listing(graph)
    assert table.count("<tr>") == 1 + len(graph.nodes) and "<script>" not in table


def test_the_table_names_the_data_each_version_was_made_from() -> None:
    retrained = version("kws:3", "kws:1", {"retrain": {"job_id": "j1", "datasets": ["kws-cap:4"]}})
    graph = lineage.build([*tree(), retrained], "kws:3")
    table = lineage.listing(graph)
    assert '<a href="/ui/datasets/kws-cap/4">kws-cap:4</a>' in table
    assert '<a href="/ui/jobs/j1">retrain job j1</a>' in table


def test_a_federated_result_is_drawn_under_its_task() -> None:
    fed = version("fl-model:1", recipe={"federated": {"task_id": "t" * 20, "rounds": 5}})
    graph = lineage.build([fed], "fl-model:1")
    assert [n.key for n in graph.nodes] == ["task:" + "t" * 20, "fl-model:1"]
    assert graph.nodes[0].href == "/ui/federated/" + "t" * 20
    assert graph.edges[0].label == "federated task tttttttt, 5 rounds"


def test_the_pareto_front_of_a_known_set() -> None:
    found = [pareto.variant(v) for v in pareto.family(tree(), "kws-int8-tflite:1")]
    assert [v.ref for v in found] == [
        "kws:1", "kws:2", "kws-fp16:1", "kws-int8:1", "kws-int8-tflite:1"
    ]  # fmt: skip
    by = {v.ref: v for v in found}
    assert by["kws-int8:1"].latency_ms == 5.0  # its batch-1 measurement, not the batch-8 one
    assert by["kws-int8-tflite:1"].point is None  # not measured: off the plot
    # kws:2 (10 ms, 0.93, 1000 B) beats kws:1 (10 ms, 0.90, 1000 B): same latency and size.
    # kws-fp16 (12 ms, 0.90, 500 B) is smaller than both, so it stays on the front.
    assert pareto.front(found) == {"kws:2", "kws-fp16:1", "kws-int8:1"}
    assert by["kws-int8:1"].chosen == "objective latency" and by["kws:2"].chosen is None
    svg = pareto.plot(found, "kws:1", "variants")
    assert svg.count('class="front"') == 3 and svg.count('class="off-front"') == 1
    assert svg.count('class="chosen"') == 1 and "kws-int8-tflite:1" not in svg
    table = pareto.listing(found)
    assert "left off the plot: latency and accuracy not measured" in table


def test_nothing_to_plot_says_so() -> None:
    found = [pareto.variant(version("a:1"))]
    assert "nothing to plot" in pareto.plot(found, "a:1", "variants")


def _snap(node: str, at: float, ratio: float | None, drifting: bool | None, acc: float | None):
    figures: dict[str, Any] = {"drifting": drifting, "windowed_accuracy": acc}
    if ratio is not None:
        figures["drift_ratio"] = {"input": ratio, "prediction": ratio / 2}
    return Snapshot(node, "kws", "1", at, figures)


def test_the_drift_series_bins_known_reports_and_marks_the_alarms() -> None:
    t0 = 1_800_000_000.0
    snaps = [
        _snap("a", t0, 0.5, False, 0.9),
        _snap("b", t0 + 0.5, 0.7, False, None),
        _snap("a", t0 + 2, 1.6, True, 0.7),
        _snap("b", t0 + 2.2, None, None, None),  # served without a profile: no figure
    ]
    marks = [Mark("a", "kws", "1", t0 + 2.1, EventType.DRIFT, {"type": "drift"})]
    cols = drift.series(snaps, marks, bins=3)
    assert cols["t"] == [round(t0 + i * 2.2 / 3, 3) for i in range(3)]  # 3 bins over 2.2 s
    assert cols["drift_ratio_max"] == [0.7, None, 1.6]
    assert cols["nodes_drifting"] == [0, None, 1]
    assert cols["nodes_reporting"] == [2, None, 2]
    assert cols["alarms"] == [None, None, 1]
    assert cols["windowed_accuracy"] == [0.9, None, 0.7]
    assert cols["estimated_accuracy"] == [None, None, None]
    assert cols["alarm_list"] == [{"at": t0 + 2.1, "node_id": "a", "type": "drift"}]
    table = drift.listing(cols)
    assert table.count("<tr>") == 1 + 2 + 1 + 1  # bins head + 2 bins with reports, alarms
    assert drift.series([], []) == {"t": [], **{c: [] for c in drift.COLUMNS}, "alarm_list": []}


def test_a_version_that_is_not_watched_has_nothing_to_draw() -> None:
    served = [Snapshot("a", "kws", "1", 1_800_000_000.0, {"requests": 5, "errors": 0})]
    cols = drift.series(served, [])
    assert cols["nodes_reporting"] == [1] and not drift.drawable(cols)
    assert drift.drawable(drift.series([_snap("a", 1_800_000_000.0, 0.2, False, None)], []))
