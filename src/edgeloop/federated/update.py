"""What a client sends back after a round, and the checks it passes before aggregation.

A model's parameters travel as one flat float64 vector; :class:`ParameterLayout` maps it to and
from a list of named arrays (a torch ``state_dict``'s order, for instance). A bad update is
data, not an exception (Flower's habit: failures of remote peers are data): :func:`screen`
returns a typed :class:`Verdict` naming the reason, so a round goes on with the others.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edgeloop.core.errors import ConfigError, DataError

Vector = npt.NDArray[np.float64]


def as_vector(values: npt.ArrayLike) -> Vector:
    """A 1-D float64 copy (a view would let a caller change a frozen value)."""
    return np.array(values, dtype=np.float64).reshape(-1)


@dataclass(frozen=True, slots=True)
class ParameterLayout:
    """Names and shapes of a model's arrays, in order, so a flat vector maps back to them."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes) or len(set(self.names)) != len(self.names):
            raise ConfigError(
                f"layout needs one distinct name per shape, got {len(self.names)} names "
                f"for {len(self.shapes)} shapes",
                hint="list each parameter once",
            )

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def flatten(self, arrays: Mapping[str, npt.ArrayLike]) -> Vector:
        """Concatenate the named arrays in layout order.

        Raises:
            DataError: a name is missing or an array has another shape.
        """
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            if name not in arrays:
                raise DataError(f"parameter {name!r} is missing", hint="send every parameter")
            part = np.asarray(arrays[name], dtype=np.float64)
            if part.shape != shape:
                raise DataError(
                    f"parameter {name!r} has shape {part.shape}, expected {shape}",
                    hint="train the round's global model, not another architecture",
                )
            parts.append(part.reshape(-1))
        return np.concatenate(parts) if parts else np.zeros(0)

    def unflatten(self, vector: npt.ArrayLike) -> dict[str, Vector]:
        """Split a flat vector back into named arrays (copies)."""
        flat = as_vector(vector)
        if flat.size != self.size:
            raise DataError(f"vector has {flat.size} values, layout expects {self.size}")
        out: dict[str, Vector] = {}
        start = 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            stop = start + math.prod(shape)
            out[name] = flat[start:stop].reshape(shape).copy()
            start = stop
        return out


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """One client's answer to round ``round``: its locally trained weights (flat) and metrics.

    ``weights`` are the client's full model after local training; strategies take the delta
    ``weights - global`` themselves (Reddi et al. 2021 call it the pseudo-gradient's negative).
    """

    node_id: str
    round: int
    num_samples: int
    weights: Vector
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ConfigError("a client update needs a node id", hint="set node_id")
        if self.round < 0:
            raise ConfigError(f"round must be >= 0, got {self.round}")
        object.__setattr__(self, "weights", as_vector(self.weights))
        object.__setattr__(self, "metrics", dict(self.metrics))


class RejectReason(enum.Enum):
    """Why an update was left out of aggregation."""

    NOT_FINITE = "not_finite"  # NaN or +-inf anywhere
    WRONG_SHAPE = "wrong_shape"  # another number of parameters than the global model
    OVERSIZED = "oversized"  # more bytes than the task allows (checked before anything else)
    REPLAYED = "replayed"  # answers an earlier round than the current one
    FUTURE_ROUND = "future_round"  # claims a round that has not started
    NO_SAMPLES = "no_samples"  # trained on nothing: its weight in FedAvg would be 0
    DUPLICATE = "duplicate"  # a second update from the same node in this round
    NOT_SELECTED = "not_selected"  # from a node that was not asked this round


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accepted, or rejected with a reason and a sentence naming the bad value."""

    node_id: str
    reason: RejectReason | None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class UpdateLimits:
    """What an update must satisfy in round ``round``: size, shape, who may answer."""

    round: int
    num_params: int
    max_bytes: int
    selected: frozenset[str] | None = None  # None: anyone may answer

    def __post_init__(self) -> None:
        if self.num_params <= 0 or self.max_bytes <= 0:
            raise ConfigError(
                f"num_params and max_bytes must be > 0, got {self.num_params}, {self.max_bytes}"
            )


def check_update(update: ClientUpdate, limits: UpdateLimits) -> Verdict:
    """The verdict on one update (cheap checks first, the NaN scan last)."""
    node, got = update.node_id, update.weights
    if got.nbytes > limits.max_bytes:
        return Verdict(node, RejectReason.OVERSIZED, f"{got.nbytes} bytes > {limits.max_bytes}")
    if limits.selected is not None and node not in limits.selected:
        return Verdict(node, RejectReason.NOT_SELECTED, f"{node!r} was not selected this round")
    if update.round < limits.round:
        return Verdict(node, RejectReason.REPLAYED, f"round {update.round} < {limits.round}")
    if update.round > limits.round:
        return Verdict(node, RejectReason.FUTURE_ROUND, f"round {update.round} > {limits.round}")
    if got.size != limits.num_params:
        return Verdict(
            node, RejectReason.WRONG_SHAPE, f"{got.size} parameters, expected {limits.num_params}"
        )
    if update.num_samples <= 0:
        return Verdict(node, RejectReason.NO_SAMPLES, f"num_samples={update.num_samples}")
    if not np.isfinite(got).all():
        bad = int(np.count_nonzero(~np.isfinite(got)))
        return Verdict(node, RejectReason.NOT_FINITE, f"{bad} NaN/inf values")
    return Verdict(node, None)


@dataclass(frozen=True, slots=True)
class Screening:
    """The updates that passed, and a verdict per rejected one, with counts per reason."""

    accepted: tuple[ClientUpdate, ...]
    rejected: tuple[Verdict, ...]

    def counts(self) -> dict[RejectReason, int]:
        out: dict[RejectReason, int] = {}
        for verdict in self.rejected:
            if verdict.reason is not None:
                out[verdict.reason] = out.get(verdict.reason, 0) + 1
        return out


def screen(updates: Sequence[ClientUpdate], limits: UpdateLimits) -> Screening:
    """Split updates into accepted and rejected; a node's second update is a duplicate."""
    accepted: list[ClientUpdate] = []
    rejected: list[Verdict] = []
    seen: set[str] = set()
    for update in updates:
        verdict = check_update(update, limits)
        if verdict.accepted and update.node_id in seen:
            verdict = Verdict(update.node_id, RejectReason.DUPLICATE, "second update this round")
        if verdict.accepted:
            seen.add(update.node_id)
            accepted.append(update)
        else:
            rejected.append(verdict)
    return Screening(tuple(accepted), tuple(rejected))
