"""The monitoring routes: ground-truth labels in, the drift monitor's state out.

====================================================  ============================================
``POST /v2/models/{m}/labels``                        labels for answered requests (labels.py)
``POST /predict/labels``, ``/predict/{m}/labels``     the same for ``/predict``'s request ids
``GET  /v2/models/{m}[/versions/{v}]/monitor``        the monitor's state as JSON
====================================================  ============================================

A model served without a profile answers the view with ``"state": "no profile"`` (never an
error); labels for it are refused with 409, there being no answer to join them to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from edgeloop.core.errors import ConflictError
from edgeloop.monitoring import AlarmKind, ScorePart
from edgeloop.serving.catalog import Catalog, ServedModel
from edgeloop.serving.config import ServerConfig
from edgeloop.serving.errors import BadRequestError
from edgeloop.serving.labels import JoinMap, Label, check_label, parse_labels, unknown_id
from edgeloop.serving.served import ServedVersion
from edgeloop.serving.watch import Watch, WatchState


class Feedback:
    """Applies labels through the service's join map; describes the watches."""

    def __init__(self, catalog: Catalog, joins: JoinMap, config: ServerConfig) -> None:
        self.catalog = catalog
        self.joins = joins
        # Called with (model, [(request id, classes)]) for applied labels (capture_sink.py).
        self.label_sinks: list[Callable[[str, list[tuple[str, tuple[int, ...]]]], None]] = []
        self.batch_max = config.label_batch_max
        self.counts: Counter[tuple[str, str]] = Counter()  # (model, outcome) -> labels
        # (model, version, correct) -> labelled rows: per-arm accuracy of A/B experiments
        self.outcomes: Counter[tuple[str, str, bool]] = Counter()

    def apply(self, name: str | None, body: bytes, only: str | None) -> dict[str, Any]:
        """Join and apply the labels of ``body`` for model ``name`` (None: the body's
        ``"model"``, else ``only``, the single served model).

        Raises:
            BadRequestError (400): a malformed body or a class the model lacks; nothing applied.
            PayloadTooLargeError (413): too many labels in one body.
            NotFoundError (404): unknown model; the single form's unknown request id.
            ConflictError (409): no version of the model is watched with its outputs.
        """
        labels, single, named = parse_labels(body, self.batch_max)
        model = self.catalog.model(name or named or only or "")
        if not any(v.watch.classes for v in model.versions.values()):
            raise ConflictError(
                f"model {model.name!r} is served without a reference profile of its outputs; "
                "labels have no answer to join to",
                hint=f"put a profile built with outputs beside the model ({model.name}"
                ".profile.npz) and reload it",
            )
        joined = self._join(model, labels, single)
        for label, served, watch in joined:
            for p, t in zip(served.predicted, label.classes, strict=True):
                self.outcomes[(model.name, served.version, p == t)] += 1
            monitor = watch.monitor
            if monitor is not None:
                for p, t in zip(served.predicted, label.classes, strict=True):
                    monitor.record_label(p, t)
                self.joins.take(model.name, label.request_id)
        for watch in {id(w): w for _, _, w in joined}.values():
            watch.check_degradation()
        taken = {label.request_id for label, _, _ in joined}
        for sink in self.label_sinks:
            sink(model.name, [(label.request_id, label.classes) for label, _, _ in joined])
        unknown = [label.request_id for label in labels if label.request_id not in taken]
        self.counts[(model.name, "applied")] += len(joined)
        self.counts[(model.name, "unknown")] += len(unknown)
        return {"model": model.name, "applied": len(joined), "unknown": len(unknown),
                "unknown_ids": unknown[:20]}  # fmt: skip

    def _join(
        self, model: ServedModel, labels: list[Label], single: bool
    ) -> list[tuple[Label, Any, Watch]]:
        """Each label with its served answer and watch; checked before any is applied."""
        joined = []
        seen: set[str] = set()
        for i, label in enumerate(labels):
            if label.request_id in seen:  # a request is labelled once
                continue
            seen.add(label.request_id)
            served = self.joins.peek(model.name, label.request_id)
            version = model.versions.get(served.version) if served is not None else None
            classes = version.watch.classes if version is not None else None
            if served is None or version is None or classes is None:
                if single:
                    self.counts[(model.name, "unknown")] += 1
                    raise unknown_id(model.name, label.request_id)
                continue
            try:
                check_label(label, served, classes, "" if single else f"labels[{i}].")
            except BadRequestError:
                self.counts[(model.name, "invalid")] += 1
                raise
            joined.append((label, served, version.watch))
        return joined

    def view(self, name: str, version: str | None) -> dict[str, Any]:
        """The monitor's state of ``version`` (None: the latest ready one).

        Raises:
            NotFoundError, NotReadyError: as :meth:`ServedModel.version`.
        """
        model = self.catalog.model(name)
        served = model.version(version or model.latest or "")
        served.watch.flush()
        return {**watch_doc(served), "labels": self._label_doc(model.name)}

    def _label_doc(self, name: str) -> dict[str, Any]:
        outcomes = {o: n for (m, o), n in self.counts.items() if m == name}
        return {"outcomes": outcomes, "waiting": len(self.joins), "expired": self.joins.expired,
                "evicted": self.joins.evicted}  # fmt: skip


def monitoring_status(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Each served model's latest version's drift state, short (the agent's ``/agent/status``)."""
    out: dict[str, dict[str, Any]] = {}
    for model in catalog.models.values():
        served = model.versions.get(model.latest or "")
        if served is None:
            continue
        served.watch.flush()
        doc = watch_doc(served)
        keep = ("version", "state", "reason", "samples_seen", "alarms", "last_alarm",
                "performance", "state_bytes", "quality")  # fmt: skip
        short = {k: doc[k] for k in keep if k in doc}
        if "scores" in doc:
            short["drift_ratio"] = {k: v["ratio"] for k, v in doc["scores"].items()}
            short["drifting"] = any(v["ratio"] > 1.0 for v in doc["scores"].values())
        out[model.name] = short
    return out


def watch_doc(served: ServedVersion) -> dict[str, Any]:
    """A version's watch as JSON (``GET .../monitor``, the agent's status)."""
    watch = served.watch
    state, _, reason = watch.status.partition(": ")
    doc: dict[str, Any] = {"model": served.name, "version": served.version, "state": state,
                           "reason": reason}  # fmt: skip
    monitor = watch.monitor
    if monitor is None:
        return doc
    profile = monitor.profile
    out = profile.outputs
    thresholds = {AlarmKind.INPUT: profile.input.thresholds}
    if out is not None:
        thresholds[AlarmKind.PREDICTION] = out.prediction.thresholds
        thresholds[AlarmKind.CONFIDENCE] = out.confidence.thresholds
    ratios = watch.score_ratios()
    scores = {
        kind.value: {
            "ratio": ratios[kind.value],
            "parts": {
                part.value: {"score": s, "threshold": t}
                for part, s, t in zip(ScorePart, values, thresholds[kind], strict=False)
            },
        }
        for kind, values in monitor.scores.items()
    }
    quality, perf = monitor.quality, monitor.performance
    doc.update(
        state=WatchState.ACTIVE.value,
        profile={
            "detector": profile.detector, "reference_rows": profile.n,
            "sample_shape": list(profile.sample_shape),
            "classes": out.num_classes if out else None,
            "reference_accuracy": out.reference_accuracy if out else None,
        },
        sample_rate=watch.sample_rate, requests=watch.requests, samples_seen=monitor.samples_seen,
        queued=watch.queued, dropped=watch.dropped, refused=watch.refused,
        scores=scores, alarms=dict(watch.alarms),
        last_alarm=watch.last_alarm.to_dict() if watch.last_alarm else None,
        quality={
            "samples": quality.samples, "wrong_shape": quality.wrong_shape,
            "nonfinite_samples": quality.nonfinite_samples, "out_of_range": quality.out_of_range,
            "nonfinite_by_value": _nonzero(quality.nonfinite),
            "out_of_range_by_value": _nonzero(
                tuple(a + b for a, b in zip(quality.below_range, quality.above_range, strict=True))
            ),
        },
        performance={
            "labelled": perf.labelled, "window": perf.window, "accuracy": perf.accuracy,
            "macro_f1": perf.macro_f1, "estimated_accuracy": perf.estimated_accuracy,
        },
        state_bytes=monitor.state_bytes,
        update_ms_mean=(watch.update_s * 1000.0 / monitor.samples_seen)
        if monitor.samples_seen else None,
    )  # fmt: skip
    return doc


def _nonzero(counts: tuple[int, ...], top: int = 10) -> dict[str, int]:
    """The ``top`` input positions with the largest non-zero counts."""
    ranked = sorted(((c, i) for i, c in enumerate(counts) if c), reverse=True)[:top]
    return {str(i): c for c, i in ranked}
