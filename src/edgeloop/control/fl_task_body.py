"""The body of ``POST /api/v1/fl/tasks`` (Pydantic, strict, only at the HTTP edge): what a
federated task may ask for, turned into the store's :class:`~edgeloop.control.fl_store.TaskSpec`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from edgeloop.control.fl_store import DpOptions, LocalTraining, TaskSpec

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class _Local(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    lr: float = Field(0.05, gt=0, le=10)
    epochs: int = Field(1, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=65536)
    mu: float = Field(0.0, ge=0, le=1000)


class _Dp(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    noise_multiplier: float = Field(1.0, gt=0, le=1000)
    clip_norm: float = Field(1.0, gt=0, le=1e6)
    delta: float = Field(1e-5, gt=0, lt=1)
    target_epsilon: float | None = Field(None, gt=0, le=1e6)


class TaskBody(BaseModel):
    """``POST /api/v1/fl/tasks``."""

    model_config = ConfigDict(strict=True, extra="forbid")
    model: Name
    strategy: Name = "fedavg"
    strategy_params: dict[Name, float] = Field(default_factory=dict, max_length=16)
    rounds: int = Field(5, ge=1, le=10_000)
    clients_per_round: int = Field(2, ge=1, le=100_000)
    min_clients: int = Field(2, ge=1, le=100_000)
    deadline_s: float = Field(60.0, gt=0, le=86_400)
    selector: Name = "uniform"
    selector_params: dict[Name, float | Annotated[str, StringConstraints(max_length=500)]] = Field(
        default_factory=dict, max_length=16
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    local: _Local | None = None
    dp: _Dp | None = None
    secagg: bool = False
    register_as: Name | None = None

    def spec(self) -> TaskSpec:
        d = self.model_dump()
        d["local"] = LocalTraining(**(d["local"] or {}))
        d["dp"] = None if d["dp"] is None else DpOptions(**d["dp"])
        return TaskSpec(**d)
