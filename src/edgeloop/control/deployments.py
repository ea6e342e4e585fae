"""Deployments: the spec an admin posts, the artifacts it names, and per-node desired documents.

A node's desired state is the document ``deployments/<node_id>.json``, a signed TUF target.
Changing it bumps the node's revision and signs new targets/snapshot/timestamp metadata in the
same database transaction as the node row, so the row and the signed document never disagree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from edgeloop.control import self_test, tables
from edgeloop.core.errors import ConfigError
from edgeloop.core.types import ModelRef, TensorSpec
from edgeloop.registry.registry import Registry
from edgeloop.registry.update_repo import UpdateRepository
from edgeloop.serving.capture import CaptureSpec

SCHEMA = 1
_WAVE = re.compile(r"^([1-9][0-9]{0,5})(%?)$")
_EXT = {"onnx": "onnx", "tflite": "tflite", "openvino": "xml"}


def _number(doc: Mapping[str, Any], key: str, default: float | None) -> float | None:
    value = doc.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"plan {key}={value!r} is not valid; expected a number >= 0 or null")
    if value < 0:
        raise ConfigError(f"plan {key}={value!r} is negative; expected a number >= 0")
    return float(value)


@dataclass(frozen=True, slots=True)
class Guard:
    """The health guard a wave must pass (None: not checked)."""

    require_self_test: bool = True
    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    min_requests: int = 0
    # A node with fewer requests in its window is WAITING, not healthy (control/guard.py):
    # the wave converges only once every node saw that much traffic. 0: not required.
    required_requests: int = 0

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Guard:
        return cls(
            bool(doc.get("require_self_test", True)),
            _number(doc, "max_error_rate", None),
            _number(doc, "max_p99_ms", None),
            _count(doc, "min_requests"),
            _count(doc, "required_requests"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "require_self_test": self.require_self_test,
            "max_error_rate": self.max_error_rate,
            "max_p99_ms": self.max_p99_ms,
            "min_requests": self.min_requests,
            "required_requests": self.required_requests,
        }


def _count(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"guard {key}={value!r} is not valid; expected an int >= 0")
    return value


@dataclass(frozen=True, slots=True)
class Plan:
    """Waves (cumulative counts ``"N"`` or shares ``"P%"`` of the selected nodes), soak time,
    the agent's watch window, how long a wave may take to converge, and the guard."""

    waves: tuple[str, ...] = ("100%",)
    soak_s: float = 30.0
    watch_s: float = 30.0
    wave_timeout_s: float = 600.0
    guard: Guard = field(default_factory=Guard)

    def __post_init__(self) -> None:
        if not self.waves:
            raise ConfigError("plan waves are empty", hint='e.g. ["1", "10%", "50%", "100%"]')
        for wave in self.waves:
            match = _WAVE.match(str(wave))
            if match is None or (match.group(2) and int(match.group(1)) > 100):
                raise ConfigError(
                    f"plan wave {wave!r} is not valid; expected a node count like '1' or a "
                    "share like '10%' (at most 100%)",
                    hint='e.g. ["1", "10%", "50%", "100%"]',
                )

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Plan:
        waves = doc.get("waves", ["100%"])
        if not isinstance(waves, list):
            raise ConfigError(f"plan waves {waves!r} are not a list", hint='e.g. ["1", "100%"]')
        guard = doc.get("guard") or {}
        if not isinstance(guard, Mapping):
            raise ConfigError(f"plan guard {guard!r} is not an object")
        return cls(
            tuple(str(w) for w in waves),
            _number(doc, "soak_s", 30.0) or 0.0,
            _number(doc, "watch_s", 30.0) or 0.0,
            _number(doc, "wave_timeout_s", 600.0) or 0.0,
            Guard.from_dict(guard),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "waves": list(self.waves),
            "soak_s": self.soak_s,
            "watch_s": self.watch_s,
            "wave_timeout_s": self.wave_timeout_s,
            "guard": self.guard.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What to run where, and how to roll it out."""

    name: str
    model: ModelRef
    selector: Mapping[str, Any] = field(default_factory=dict)
    variants: Mapping[str, ModelRef] = field(default_factory=dict)
    serving: Mapping[str, Any] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)
    force_spec_change: bool = False  # replace a model whose inputs/outputs differ (clients break)

    @classmethod
    def from_dict(cls, doc: Any) -> DeploymentSpec:
        """Raises ConfigError naming the bad field."""
        if not isinstance(doc, Mapping):
            raise ConfigError(f"a deployment spec must be an object, got {type(doc).__name__}")
        keys = {"name", "model", "selector", "variants", "serving", "plan", "force_spec_change"}
        unknown = set(doc) - keys
        if unknown:
            raise ConfigError(
                f"unknown deployment spec keys {sorted(unknown)}", hint=f"keys: {sorted(keys)}"
            )
        name, model = doc.get("name"), doc.get("model")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"deployment name {name!r} is not valid; expected a string")
        if not isinstance(model, str):
            raise ConfigError(f"deployment model {model!r} is not valid; expected 'name:version'")
        selector, variants = doc.get("selector") or {}, doc.get("variants") or {}
        serving, plan = doc.get("serving") or {}, doc.get("plan") or {}
        for key, value in (("selector", selector), ("variants", variants), ("serving", serving)):
            if not isinstance(value, Mapping):
                raise ConfigError(f"deployment {key} {value!r} is not an object")
        if serving.get("capture") is not None:  # refused here, before any node activates it
            CaptureSpec.from_json(serving["capture"])
        labels = selector.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise ConfigError(f"selector labels {labels!r} are not an object")
        if not isinstance(plan, Mapping):
            raise ConfigError(f"deployment plan {plan!r} is not an object")
        force = doc.get("force_spec_change", False)
        if not isinstance(force, bool):
            raise ConfigError(f"force_spec_change {force!r} is not valid; expected true or false")
        return cls(
            name=name,
            model=ModelRef.parse(model),
            selector={"labels": {str(k): str(v) for k, v in labels.items()}},
            variants={str(k): ModelRef.parse(str(v)) for k, v in variants.items()},
            serving=dict(serving),
            plan=Plan.from_dict(plan),
            force_spec_change=force,
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "model": str(self.model),
            "selector": dict(self.selector),
            "variants": {k: str(v) for k, v in self.variants.items()},
            "serving": dict(self.serving),
            "plan": self.plan.to_dict(),
        }
        if self.force_spec_change:  # only when set: specs stored before it read the same
            doc["force_spec_change"] = True
        return doc

    def ref_for(self, device_class: str) -> ModelRef:
        return self.variants.get(device_class, self.model)


def spec_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """How manifest ``new``'s inputs and outputs differ from manifest ``old``'s (names, dtypes,
    shapes), one line per tensor, e.g. ``"input 'x': float32 [None, 4] -> float32 [None, 8]"``;
    empty when a client of ``old`` can call ``new`` unchanged. Pure."""
    changes: list[str] = []
    for side in ("inputs", "outputs"):
        before = {t.name: t for t in map(TensorSpec.from_dict, old.get(side) or [])}
        after = {t.name: t for t in map(TensorSpec.from_dict, new.get(side) or [])}
        for name in sorted(before.keys() | after.keys()):
            was, now = before.get(name), after.get(name)
            if was != now:
                changes.append(f"{side[:-1]} {name!r}: {_tensor(was)} -> {_tensor(now)}")
    return changes


def _tensor(spec: TensorSpec | None) -> str:
    return "absent" if spec is None else f"{spec.dtype} {list(spec.shape)}"


def compute_waves(node_ids: Sequence[str], waves: Sequence[str]) -> list[list[str]]:
    """Split ``node_ids`` (in order) into waves; each wave entry is a cumulative count ``N`` or
    share ``P%`` (rounded up, at least one node). Empty waves are dropped. Pure."""
    result: list[list[str]] = []
    reached = 0
    for wave in waves:
        number, percent = int(wave.rstrip("%")), wave.endswith("%")
        total = math.ceil(len(node_ids) * number / 100) if percent else number
        total = min(len(node_ids), max(total, 1))
        if total > reached:
            result.append(list(node_ids[reached:total]))
            reached = total
    return result


def artifact_entry(registry: Registry, ref: ModelRef, main: ModelRef) -> tuple[dict[str, Any], str]:
    """The document entry of registry version ``ref`` deployed as ``main``, and a note on its
    self-test. Raises NotFoundError / UntrustedArtifactError from the registry."""
    version, path = registry.resolve(ref)
    manifest = version.manifest
    ext = _EXT.get(manifest.format, manifest.format)
    block, note = self_test.compute(path, manifest.format)
    entry = {
        "name": main.name,
        "version": main.version,
        "variant": str(version.ref),
        "target": f"artifacts/{version.name}-{version.version}.{ext}",
        "sha256": version.artifact_sha256,
        "length": version.size_bytes,
        "manifest": manifest.to_dict(),
        "self_test": block,
    }
    if manifest.profile is not None:  # the drift monitor's reference, a second signed target
        # under artifacts/: content-addressed like the model, so tier parents cache it too
        entry["profile"] = {
            "target": f"artifacts/{version.name}-{version.version}.profile.npz",
            "sha256": manifest.profile.sha256,
            "length": manifest.profile.size_bytes,
        }
    return entry, note


@dataclass(frozen=True, slots=True)
class Desired:
    """What one node should run: its model entries and the rollout that put them there."""

    models: list[dict[str, Any]]
    serving: Mapping[str, Any]
    watch_s: float
    guard: Guard
    rollout: str | None
    wave: int | None


def set_desired(
    conn: sa.Connection, repo: UpdateRepository, desired: Mapping[str, Desired]
) -> dict[str, int]:
    """Give each node its new desired document (revision + 1), signed in one TUF publish
    inside ``conn``'s transaction. Returns the new revision of each node."""
    revisions: dict[str, int] = {}
    docs: dict[str, bytes | None] = {}
    for node_id, want in desired.items():
        revision = conn.execute(
            tables.nodes.update()
            .where(tables.nodes.c.node_id == node_id)
            .values(desired_revision=tables.nodes.c.desired_revision + 1)
            .returning(tables.nodes.c.desired_revision)
        ).scalar_one()
        doc = {
            "schema": SCHEMA,
            "node_id": node_id,
            "revision": int(revision),
            "models": want.models,
            "serving": dict(want.serving),
            "watch_s": want.watch_s,
            "guard": want.guard.to_dict(),
            "rollout": want.rollout,
            "wave": want.wave,
        }
        text = json.dumps(doc, sort_keys=True)
        conn.execute(
            tables.nodes.update().where(tables.nodes.c.node_id == node_id).values(desired=text)
        )
        docs[f"deployments/{node_id}.json"] = text.encode()
        revisions[node_id] = int(revision)
    if docs:
        repo.publish_in(conn, repo.stage(docs))
    return revisions
