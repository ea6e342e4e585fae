"""The control plane's periodic work: every rollout's tick, and TUF metadata re-signed in time.

The TUF timestamp is re-signed once past half its lifetime (``UpdateRepository.refresh``),
checked every tenth of that lifetime (at most a minute) and at most once per tick. Expiry times
are whole seconds. So at worst a client is served a timestamp with
``lifetime / 2 - check - 1`` seconds left, where ``check = max(tick, min(60, lifetime / 10))``;
:func:`check_settings` refuses settings where that is under :data:`MIN_MARGIN_S`
(with the default 1 s tick, a lifetime under 8 s), since a client that meets an expired
timestamp fails its update.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from starlette.concurrency import run_in_threadpool

from edgeloop.control.alerting import Alerting
from edgeloop.control.experiment_tick import ExperimentTicker
from edgeloop.control.jobs_api import PolicyTrigger
from edgeloop.control.plane import ControlPlane
from edgeloop.core.errors import ConfigError, EdgeError

log = logging.getLogger("edgeloop.control")
MIN_MARGIN_S = 2.0  # the least a served timestamp may have left, for a stalled or slow client


def refresh_every_s(timestamp_s: float) -> float:
    """How often the loop asks whether metadata needs re-signing."""
    return min(60.0, timestamp_s / 10)


def timestamp_margin_s(timestamp_s: float, tick_s: float) -> float:
    """The least time left on a timestamp the control plane serves (see the module doc)."""
    return timestamp_s / 2 - max(tick_s, refresh_every_s(timestamp_s)) - 1.0


def check_settings(timestamp_s: float, tick_s: float) -> None:
    """Raise ConfigError for a tick that is not a positive time, or when the timestamp could be
    served with under ``MIN_MARGIN_S`` left."""
    if not (isinstance(tick_s, int | float) and math.isfinite(tick_s) and tick_s > 0):
        raise ConfigError(
            f"--tick-s {tick_s!r} is not valid; expected seconds > 0",
            hint="the default, 1 s, moves rollouts along promptly",
        )
    margin = timestamp_margin_s(timestamp_s, tick_s)
    if margin >= MIN_MARGIN_S:
        return
    least = math.ceil(2 * (MIN_MARGIN_S + 1.0 + tick_s))  # enough when the tick is the check
    while timestamp_margin_s(least, tick_s) < MIN_MARGIN_S:
        least += 1
    raise ConfigError(
        f"--timestamp-expiry-s {timestamp_s:g} with --tick-s {tick_s:g} serves a TUF timestamp "
        f"with {max(margin, 0.0):.1f} s left at worst; expected at least {MIN_MARGIN_S:g} s",
        hint=f"use --timestamp-expiry-s {least} or more, or a shorter --tick-s",
    )


async def run_loop(plane: ControlPlane, tick_s: float, alerting: Alerting | None = None) -> None:
    """Tick every rollout every ``tick_s``; re-sign metadata nearing expiry; evaluate the alert
    rules (their webhook sends from a task of its own); start the retraining jobs of due
    schedule slots (the :class:`PolicyTrigger` on ``alerting.on_opened``). Runs until
    cancelled; a failure is logged and the next tick tries again."""
    refresh_s = refresh_every_s(plane.repo.expiry.timestamp_s)
    refreshed = 0.0
    experiments = ExperimentTicker()  # looks at open A/B experiments (control/experiment_tick)
    while True:
        try:
            await run_in_threadpool(plane.tick_all)
            if time.monotonic() - refreshed >= refresh_s:
                await run_in_threadpool(plane.repo.refresh)
                refreshed = time.monotonic()
        except EdgeError as exc:
            log.warning("control loop: %s", exc)
        except Exception:  # the loop outlives any one failure; a dead loop freezes every rollout
            log.exception("control loop: unexpected failure; trying again next tick")
        try:
            await run_in_threadpool(experiments.tick, plane)
        except Exception:  # rollouts keep moving whatever an experiment's look does
            log.exception("experiments: unexpected failure; trying again next tick")
        if alerting is not None:
            try:
                await alerting.tick(plane)
            except EdgeError as exc:
                log.warning("alert rules: %s", exc)
            except Exception:  # rollouts keep moving whatever the alerting does
                log.exception("alert rules: unexpected failure; trying again next tick")
        policies = alerting.on_opened if alerting is not None else None
        if isinstance(policies, PolicyTrigger):  # --retrain-policies: schedules due by the clock
            try:
                await run_in_threadpool(policies.tick, plane)
            except EdgeError as exc:
                log.warning("retrain schedules: %s", exc)
            except Exception:  # rollouts keep moving whatever a schedule does
                log.exception("retrain schedules: unexpected failure; trying again next tick")
        await asyncio.sleep(tick_s)
