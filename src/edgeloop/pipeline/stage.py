"""A stage of the loop, and the machinery that runs a list of them in order.

A stage is a name and a function from the results of the stages before it to its own frozen
result. The result's ``to_dict()`` is the stage's block of the report: the top-level report keys
it fills (``{"train": ..., "history": ..., "checkpoint": ...}``). A stage that cannot run here (an
optional extra missing, nothing chosen to roll out, turned off) returns :class:`Skipped` with the
reason, and the run goes on: the report names the reason instead of the run failing. An error a
stage raises on purpose (:class:`EdgeError`) still stops the run, unchanged.

Quickstart and retraining jobs are lists of stages; adding a stage is adding an entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from edgeloop.core.errors import ConfigError


class StageResult(Protocol):
    """What a stage returns: a frozen value whose ``to_dict()`` is its block of the report."""

    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=StageResult)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A stage that did not run, and why (said so the reader can act on it)."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ConfigError(
                "a skipped stage needs a reason; got an empty one",
                hint="say what is missing and how to get it (e.g. the extra to install)",
            )

    def to_dict(self) -> dict[str, Any]:
        return {"skipped": self.reason}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One stage's result (or why it was skipped) and its wall time in seconds."""

    stage: str
    result: StageResult | Skipped
    seconds: float

    @property
    def ran(self) -> bool:
        return not isinstance(self.result, Skipped)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The outcomes of the stages run so far, in order: where a stage reads its inputs from."""

    items: tuple[Outcome, ...] = ()

    def need(self, kind: type[R]) -> R:
        """The latest result of type ``kind`` a stage before this one produced.

        Raises:
            ConfigError: no stage before produced one (the stage list is in the wrong order).
        """
        for outcome in reversed(self.items):
            if isinstance(outcome.result, kind):
                return outcome.result
        raise ConfigError(
            f"no stage before this one produced a {kind.__name__}; ran: "
            f"{', '.join(o.stage for o in self.items) or 'none'}",
            hint="put the stage that produces it earlier in the list",
        )

    def get(self, kind: type[R]) -> R | None:
        """Like :meth:`need`, but None when no stage produced one (it was skipped)."""
        try:
            return self.need(kind)
        except ConfigError:
            return None

    def ran(self) -> tuple[str, ...]:
        return tuple(o.stage for o in self.items if o.ran)

    def skipped(self) -> dict[str, str]:
        return {o.stage: o.result.reason for o in self.items if isinstance(o.result, Skipped)}

    def stage_seconds(self) -> dict[str, float]:
        return {o.stage: o.seconds for o in self.items if o.ran}

    def report(self) -> dict[str, Any]:
        """Every stage's block merged in order, plus ``stages``, ``skipped`` and ``stage_seconds``.

        A skipped stage's block is ``{name: {"skipped": reason}}``. Where two stages fill the
        same key with a dict, the later one's entries are added to it (the optimize stage adds
        the edge variant's ref to the ``registry`` block the register stage started).
        """
        body: dict[str, Any] = {"stages": list(self.ran())}
        for outcome in self.items:
            block = outcome.result.to_dict()
            if isinstance(outcome.result, Skipped):
                block = {outcome.stage: block}
            for key, value in block.items():
                if isinstance(body.get(key), dict) and isinstance(value, dict):
                    body[key] = {**body[key], **value}
                else:
                    body[key] = value
        body["skipped"] = self.skipped()
        body["stage_seconds"] = self.stage_seconds()
        return body


Run = Callable[[Outcomes], "StageResult | Skipped"]


@dataclass(frozen=True, slots=True)
class Stage:
    """One entry of a pipeline: ``run`` reads its inputs from the outcomes before it.

    ``needs`` names stages whose results it reads: when one of them did not run, this stage is
    skipped with that reason instead of being called. ``says`` is the progress line.
    """

    name: str
    run: Run
    needs: tuple[str, ...] = ()
    says: str = ""


def run_stages(
    stages: Sequence[Stage], *, on_stage: Callable[[str], None] | None = None
) -> Outcomes:
    """Run ``stages`` in order, timing each; return every outcome.

    Raises:
        ConfigError: two stages share a name, or a stage needs one that is not before it.
        EdgeError: from a stage that failed, unchanged (its message says what to fix).
    """
    _check_order(stages)
    say = on_stage or (lambda _line: None)
    done = Outcomes()
    for stage in stages:
        missing = _missing_need(stage, done)
        if missing is not None:
            result: StageResult | Skipped = missing
            seconds = 0.0
        else:
            say(stage.says or stage.name)
            start = time.perf_counter()
            result = stage.run(done)
            seconds = round(time.perf_counter() - start, 3)
        done = Outcomes((*done.items, Outcome(stage.name, result, seconds)))
    return done


def _missing_need(stage: Stage, done: Outcomes) -> Skipped | None:
    """Skipped, naming the first needed stage that did not run; None when all ran."""
    by_name = {o.stage: o for o in done.items}
    for need in stage.needs:
        outcome = by_name[need]
        if isinstance(outcome.result, Skipped):
            return Skipped(f"needs {need}, which was skipped: {outcome.result.reason}")
    return None


def _check_order(stages: Sequence[Stage]) -> None:
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ConfigError(
                f"two stages are named {stage.name!r}; names key the report",
                hint="give each stage its own name",
            )
        if unknown := [n for n in stage.needs if n not in seen]:
            raise ConfigError(
                f"stage {stage.name!r} needs {unknown}, which do not run before it; "
                f"before it: {sorted(seen) or 'nothing'}",
                hint="order the list so every stage comes after the ones it needs",
            )
        seen.add(stage.name)
