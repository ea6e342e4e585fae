"""The control loop's look at open experiments, so nobody has to read a status for a decision.

Each control tick (control/loop.py) takes the next :data:`PER_TICK` open experiments in id
order after the last one it looked at (round robin, wrapping around), so a tick costs at most
``PER_TICK`` looks however many experiments are open, and every open experiment is looked at
once every ``ceil(open / PER_TICK)`` ticks. A look (``experiments.refresh``) follows the
current step's rollout, sums the nodes' reports and updates the sequential test; the mSPRT's
p-value is valid at any look, so looking on a clock is as sound as looking on a read.

When a look's decision is ``stopped_by_guardrail`` and the experiment is RUNNING, the tick
reverts it to the champion (the guarded rollout of ``experiments.revert``); the verdict and
its evidence stay stored with the experiment and its history names the guardrail. Any other
decision (``promote_treatment``, ``keep_control``) is recorded in the history when first
reached; promoting stays a person's call (``promote``).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from edgeloop.control import experiment_store as store
from edgeloop.control import experiments
from edgeloop.control.experiment_store import ExpState
from edgeloop.control.plane import ControlPlane
from edgeloop.core.errors import EdgeError
from edgeloop.experiments import Decision

log = logging.getLogger("edgeloop.control")
PER_TICK = 4
_LOOKED_AT = (ExpState.STARTING, ExpState.RUNNING, ExpState.PROMOTING, ExpState.REVERTING)


class ExperimentTicker:
    """The loop's round robin over open experiments (see the module docstring)."""

    def __init__(self, per_tick: int = PER_TICK) -> None:
        self.per_tick = per_tick
        self.after = ""  # the last experiment id looked at
        self.ready = False  # the table exists (the API creates it; a bare loop may not have)

    def _next(self, conn: sa.Connection) -> list[str]:
        table = store.experiments
        open_ = table.c.state.in_([s.value for s in _LOOKED_AT])
        query = sa.select(table.c.experiment_id).where(open_).order_by(table.c.experiment_id)
        ids = list(conn.execute(query.where(table.c.experiment_id > self.after)
                                .limit(self.per_tick)).scalars())  # fmt: skip
        if len(ids) < self.per_tick:  # wrap around
            more = conn.execute(query.limit(self.per_tick - len(ids))).scalars()
            ids += [i for i in more if i not in ids]
        return ids

    def tick(self, plane: ControlPlane) -> list[str]:
        """Look at the next experiments; the ids looked at. A failing one does not stop the
        others (it is logged and looked at again in its turn)."""
        if not self.ready:
            store.create_table(plane.db)
            self.ready = True
        ids: list[str] = plane.read("finding open experiments", self._next)
        for exp_id in ids:
            self.after = exp_id
            try:
                _look(plane, exp_id)
            except EdgeError as exc:
                log.warning("look at experiment %s failed: %s", exp_id, exc)
            except Exception:  # one experiment's bug must not stop the loop's other work
                log.exception("look at experiment %s failed unexpectedly", exp_id)
        return ids


def _look(plane: ControlPlane, exp_id: str) -> None:
    exp = plane.write(f"looking at experiment {exp_id}", lambda c: experiments.refresh(c, exp_id))
    verdict: dict[str, Any] = dict((exp.look or {}).get("verdict") or {})
    if exp.state is not ExpState.RUNNING:
        return
    if verdict.get("decision") == Decision.STOPPED_BY_GUARDRAIL.value:
        reason = f"stopped by the {verdict.get('tripped')} guardrail (the control loop's look)"
        experiments.revert(plane, exp_id, reason=reason)
