"""Federated tasks in the control plane's database: the tables, the task's spec and its row.

=========================  ==================================================================
``control_fl_tasks``       one row per task: spec, state, current round and phase, the global
                           model (float64), the server optimizer's state, per-round history
``control_fl_models``      each round's global model as sent to clients (float32 bytes, sha256)
``control_fl_messages``    what a client sent (or fetched) in a round: its update, its
                           evaluation, a model download; one row per (task, round, node, kind)
``control_fl_clients``     nodes whose federated worker polls: when last, and their data sizes
``control_fl_power``       the power state each worker sent with its last poll (mains,
                           battery and its charge, or unknown)
=========================  ==================================================================

A client's raw update is kept only until its round closes (then deleted): what stays are the
figures. Times are Unix seconds. The spec is validated in :class:`TaskSpec` (Pydantic only at
the HTTP edge, in :mod:`edgeloop.control.fl_api`).
"""

from __future__ import annotations

import enum
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from edgeloop.control import tables
from edgeloop.core.errors import ConfigError
from edgeloop.federated.models import fl_model
from edgeloop.federated.selection import SELECTORS, Selector
from edgeloop.federated.strategy import STRATEGIES, ServerState
from edgeloop.federated.update import Vector
from edgeloop.registry import tuf_store
from edgeloop.registry.database import Database

metadata_obj = sa.MetaData()

tasks = sa.Table(
    "control_fl_tasks",
    metadata_obj,
    sa.Column("task_id", sa.String(36), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),  # a RoundState value
    sa.Column("phase_started_at", sa.Float, nullable=False),
    sa.Column("selected", sa.Text, nullable=False),  # JSON list of node ids
    sa.Column("weights", sa.LargeBinary, nullable=False),  # float64 global model
    sa.Column("server_state", sa.LargeBinary, nullable=False),  # npz: step, m, v
    sa.Column("history", sa.Text, nullable=False),  # JSON list, one record per round
    sa.Column("result", sa.Text, nullable=False),  # JSON: reason, registration
    sa.Column("secagg", sa.Text, nullable=True),  # JSON: the round's SecAgg step (fl_secagg)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

models = sa.Table(
    "control_fl_models",
    metadata_obj,
    sa.Column("task_id", sa.String(36), primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),  # the model clients train from in it
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("weights", sa.LargeBinary, nullable=False),  # float32, little-endian
)

messages = sa.Table(
    "control_fl_messages",
    metadata_obj,
    sa.Column("task_id", sa.String(36), primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),  # update | download
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("num_samples", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),  # the body as it came over the wire
    sa.Column("payload", sa.LargeBinary, nullable=True),  # float32 weights, until the close
    sa.Column("metrics", sa.Text, nullable=False),  # JSON
)

clients = sa.Table(
    "control_fl_clients",
    metadata_obj,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("last_poll", sa.Float, nullable=False),
    sa.Column("train_samples", sa.Integer, nullable=False),
    sa.Column("test_samples", sa.Integer, nullable=False),
)


power = sa.Table(
    "control_fl_power",
    metadata_obj,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),  # a PowerSource value
    sa.Column("battery", sa.Float, nullable=True),  # 0..1
    sa.Column("updated_at", sa.Float, nullable=False),
)


class TaskState(enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class LocalTraining:
    """What each client runs per round (training/federated_client.LocalSGD)."""

    lr: float = 0.05
    epochs: int = 1
    batch_size: int = 32
    mu: float = 0.0

    def __post_init__(self) -> None:
        if not (self.lr > 0 and self.epochs >= 1 and self.batch_size >= 1 and self.mu >= 0):
            raise ConfigError(f"local training needs lr > 0, epochs >= 1, batch >= 1: {self}")


@dataclass(frozen=True, slots=True)
class DpOptions:
    """DP-FedAvg (control plane side): z, C, delta; refuse rounds past ``target_epsilon``."""

    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and self.clip_norm > 0 and 0 < self.delta < 1):
            raise ConfigError(
                f"DP needs noise_multiplier > 0, clip_norm > 0, 0 < delta < 1: {self}",
                hint="e.g. --dp-noise 1.0 --dp-clip 1.0 --dp-delta 1e-5",
            )
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            raise ConfigError(f"target epsilon must be > 0, got {self.target_epsilon}")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A federated task as asked: checked here, so a bad one is a 400 naming the field."""

    model: str
    strategy: str = "fedavg"
    strategy_params: dict[str, float] = field(default_factory=dict)
    rounds: int = 5
    clients_per_round: int = 2
    min_clients: int = 2
    deadline_s: float = 60.0
    selector: str = "uniform"
    selector_params: dict[str, float | str] = field(default_factory=dict)
    seed: int = 0
    local: LocalTraining = LocalTraining()
    dp: DpOptions | None = None
    secagg: bool = False
    register_as: str | None = None  # registry name of the result [fl-MODEL]

    def __post_init__(self) -> None:
        fl_model(self.model)  # NotFoundError listing the models
        if self.strategy == "dp-fedavg":
            raise ConfigError(
                "ask for DP with the task's dp options, not the strategy name 'dp-fedavg'",
                hint="e.g. --strategy fedavg --dp-noise 1.0 --dp-clip 1.0",
            )
        # NotFoundError listing the known names; ConfigError naming a parameter not taken
        STRATEGIES.create(self.strategy, **self.strategy_params)
        self.make_selector()  # NotFoundError / ConfigError naming the bad name or parameter
        if not 1 <= self.rounds <= 10_000:
            raise ConfigError(f"rounds must be in 1..10000, got {self.rounds}")
        if not 1 <= self.min_clients <= self.clients_per_round:
            raise ConfigError(
                f"need 1 <= min_clients <= clients_per_round, got {self.min_clients} and "
                f"{self.clients_per_round}",
                hint="e.g. --clients-per-round 5 --min-clients 3",
            )
        if not self.deadline_s > 0:
            raise ConfigError(f"the round deadline must be > 0 s, got {self.deadline_s}")
        if self.secagg and (self.dp is not None or self.strategy in ("median", "trimmed-mean")):
            raise ConfigError(
                f"secure aggregation gives the server only the clients' mean; it cannot be "
                f"combined with {'DP' if self.dp else self.strategy!r} (they need each update)",
                hint="use --secagg with fedavg, fedprox, fedavgm, fedadam or fedyogi",
            )
        if self.secagg and self.min_clients < 2:
            raise ConfigError(
                "secure aggregation needs min_clients >= 2 (a sum of one is no secret)"
            )
        if self.dp is not None and self.strategy != "fedavg":
            raise ConfigError(
                f"DP-FedAvg replaces the server strategy; {self.strategy!r} cannot be combined",
                hint="use --strategy fedavg with the DP options",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        d = dict(d)
        d["local"] = LocalTraining(**(d.get("local") or {}))
        d["dp"] = None if d.get("dp") is None else DpOptions(**d["dp"])
        return cls(**d)

    @property
    def name(self) -> str:
        return self.register_as or f"fl-{self.model}"

    def make_selector(self) -> Selector:
        """The task's client selector: ``selector_params`` (``device_classes``: a comma list;
        whole numbers as integers), and the task's seed where the selector takes one."""
        params: dict[str, Any] = {}
        for key, value in self.selector_params.items():
            if key == "device_classes":
                params[key] = frozenset(filter(None, str(value).split(",")))
            elif isinstance(value, float) and value.is_integer() and key in ("d", "min_samples"):
                params[key] = int(value)
            else:
                params[key] = value
        if self.selector in ("uniform", "power-of-choice"):
            params.setdefault("seed", self.seed)
        try:
            return SELECTORS.create(self.selector, **params)
        except TypeError as exc:  # a word where the selector compares a number
            raise ConfigError(
                f"selector {self.selector!r} parameters {self.selector_params}: {exc}",
                hint="give numbers, e.g. --selector-param min_battery=0.3",
            ) from exc


def pack_state(state: ServerState) -> bytes:
    out = io.BytesIO()
    arrays = {k: v for k, v in (("m", state.m), ("v", state.v)) if v is not None}
    np.savez(out, step=np.array(state.step), **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def unpack_state(data: bytes) -> ServerState:
    with np.load(io.BytesIO(data)) as z:
        m = z["m"].astype(np.float64) if "m" in z else None
        v = z["v"].astype(np.float64) if "v" in z else None
        return ServerState(int(z["step"]), m, v)


def as_float64(data: bytes) -> Vector:
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


def as_float64_from32(data: bytes) -> Vector:
    """A client's float32 weights (as sent) as the float64 vector the maths takes."""
    return np.frombuffer(data, dtype="<f4").astype(np.float64)


def as_float32_bytes(weights: Vector) -> bytes:
    return np.asarray(weights, dtype="<f4").tobytes()


def loads(text: str) -> Any:
    return json.loads(text)


def create_tables(db: Database) -> None:
    """Create the federated tables if missing (safe against a racing creator)."""

    def run() -> None:
        try:
            metadata_obj.create_all(db.engine)
        except sa_exc.DBAPIError:
            metadata_obj.create_all(db.engine)
        # Candidates join the fleet's nodes (device class, reported load and memory).
        tables.metadata_obj.create_all(db.engine, tables=[tables.nodes])

    tuf_store.guarded(db, "creating the federated tables", run)
