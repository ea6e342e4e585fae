"""Retraining by policy: which fleet alerts or which schedule start a job, on which data.
Pure, no I/O.

A policy names a model and the stored data sets its captures land in. When an alert of a kind
the policy listens to opens for a version of that model (``drifting_nodes``: subject
``model:version``; ``accuracy_floor``: ``model:version@node``), :func:`specs_for` gives the job
to start: that version as the champion, the latest version of each data set, the alert's kind
as the trigger. Submitting it (:func:`edgeloop.pipeline.retrain_job.submit`) is the caller's:
a job already running for the model answers 409, which a policy caller takes as "already on
it", and a data set without labels is refused before any job exists.

A policy may also carry a :class:`~edgeloop.pipeline.retrain_schedule.Schedule`
(``"schedule": {"every": "24h"}`` and/or ``{"at": "02:00"}``): when a slot is due, the control
loop (control/schedule_tick.py) starts :func:`scheduled_spec`, the model's latest version as
the champion, with the trigger ``schedule``.

The alert values are read by duck type (``kind``, ``subject``) so this module imports nothing
from the control plane.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef
from edgeloop.pipeline.retrain_schedule import Schedule
from edgeloop.pipeline.retrain_spec import RetrainSpec, Trigger
from edgeloop.registry.datasets import DatasetRef

TRIGGERS = {"drifting_nodes": Trigger.DRIFT_ALERT, "accuracy_floor": Trigger.ACCURACY_FLOOR}


class AlertLike(Protocol):
    @property
    def subject(self) -> str: ...

    @property
    def kind(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class RetrainPolicy:
    """Retrain ``model`` on the latest versions of ``data`` when an alert of ``kinds`` opens
    and at each slot of ``schedule``; ``options`` are further :class:`RetrainSpec` fields
    (``epochs``, ``checkpoint``, ...)."""

    model: str
    data: tuple[str, ...]
    kinds: frozenset[str] = frozenset(TRIGGERS)
    options: Mapping[str, Any] = field(default_factory=dict)
    schedule: Schedule | None = None

    def __post_init__(self) -> None:
        ModelRef(self.model)
        if not self.data:
            raise ConfigError(f"retrain policy of {self.model!r} names no data set")
        for name in self.data:
            DatasetRef(name)
        if unknown := sorted(set(self.kinds) - set(TRIGGERS)):
            raise ConfigError(
                f"retrain policy of {self.model!r}: alert kinds {unknown} do not start jobs; "
                f"expected some of {sorted(TRIGGERS)}"
            )
        if bad := sorted({"model", "data", "trigger"} & set(self.options)):
            raise ConfigError(f"retrain policy options may not set {bad}; the policy does")
        if not self.kinds and self.schedule is None:
            raise ConfigError(
                f"retrain policy of {self.model!r} starts no job: no alert kinds, no schedule",
                hint='give "kinds" (or leave it out for all) or a "schedule"',
            )


def subject_ref(subject: str) -> ModelRef | None:
    """``model:version`` of an alert subject (``model:version[@node]``); None for a node id."""
    text = subject.split("@", 1)[0]
    if ":" not in text:
        return None
    try:
        return ModelRef.parse(text)
    except ConfigError:
        return None


def specs_for(alerts: Iterable[AlertLike], policies: Iterable[RetrainPolicy]) -> list[RetrainSpec]:
    """The jobs the newly opened ``alerts`` call for: one per model (the first alert wins)."""
    by_model = {p.model: p for p in policies}
    out: dict[str, RetrainSpec] = {}
    for alert in alerts:
        kind = str(getattr(alert.kind, "value", alert.kind))
        ref = subject_ref(alert.subject)
        policy = None if ref is None else by_model.get(ref.name)
        if ref is None or policy is None or kind not in policy.kinds or ref.name in out:
            continue
        out[ref.name] = RetrainSpec.from_dict(
            {
                **dict(policy.options),
                "model": str(ref),
                "data": list(policy.data),  # no version: the latest, pinned at submit
                "trigger": TRIGGERS[kind].value,
            }
        )
    return list(out.values())


def scheduled_spec(policy: RetrainPolicy) -> RetrainSpec:
    """The job a due slot of ``policy``'s schedule starts: the model's latest version as the
    champion, the latest version of each data set (both pinned at submit)."""
    return RetrainSpec.from_dict(
        {
            **dict(policy.options),
            "model": policy.model,
            "data": list(policy.data),
            "trigger": Trigger.SCHEDULE.value,
        }
    )


def load_policies(path: Path) -> tuple[RetrainPolicy, ...]:
    """The policies of a JSON file ``{"policies": [{"model", "data": [...], "kinds"?,
    "options"?, "schedule"?}]}`` (``edgeloop control --retrain-policies FILE``). ``kinds``
    left out means every alert kind; ``[]`` none (a schedule only). Raises ConfigError."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"--retrain-policies {path}: cannot read it as JSON: {exc}",
            hint='expected {"policies": [{"model": "digits-cnn", "data": ["caps"]}]}',
        ) from exc
    items = doc.get("policies") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"--retrain-policies {path}: expected an object with a list 'policies'")
    out = []
    for item in items:
        if unknown := sorted(set(item) - {"model", "data", "kinds", "options", "schedule"}):
            raise ConfigError(f"--retrain-policies {path}: fields {unknown} are not known")
        kinds = item.get("kinds", list(TRIGGERS))
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ConfigError(
                f"--retrain-policies {path}: 'kinds' is {kinds!r}; expected a list of alert kinds",
                hint=f"some of {sorted(TRIGGERS)}, or [] for a schedule only",
            )
        try:
            schedule = Schedule.from_dict(item["schedule"]) if "schedule" in item else None
        except ConfigError as exc:
            raise ConfigError(
                f"--retrain-policies {path}: policy of {item.get('model')!r}: {exc.message}",
                hint=exc.hint,
            ) from exc
        out.append(
            RetrainPolicy(
                model=str(item.get("model", "")),
                data=tuple(str(d) for d in item.get("data") or ()),
                kinds=frozenset(kinds),
                options=dict(item.get("options") or {}),
                schedule=schedule,
            )
        )
    if len({p.model for p in out}) != len(out):
        raise ConfigError(f"--retrain-policies {path}: a model has two policies")
    return tuple(out)
