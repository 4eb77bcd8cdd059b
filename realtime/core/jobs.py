"""Periodic jobs of a process: each runs when due, and fails on its own.

A job that raises is logged and runs again at its next interval; the others still run in
that tick. Tests drive jobs through ``run(name)`` and ``make_due(name)`` instead of the
scheduler's state.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger("realtime.hub")


@dataclass
class Job:
    """``run`` every ``interval()`` seconds (read each time: settings may change)."""

    name: str
    interval: Callable[[], float]
    run: Callable[[], Awaitable[None]]
    jitter: bool = False  # so a deployment's processes do not all run it at once
    first_now: bool = False  # due at start rather than one interval after it
    due: float = field(default=0.0, init=False)

    def schedule(self, now: float) -> None:
        interval = float(self.interval())
        self.due = now + (spread(interval) if self.jitter else interval)


def spread(seconds: float) -> float:
    """``seconds`` shortened by up to a quarter, at random."""
    return seconds * random.uniform(0.75, 1.0)


class Jobs:
    """The jobs of one hub, by name, in the order they run within a tick."""

    def __init__(self, jobs: list[Job]) -> None:
        self._jobs = {job.name: job for job in jobs}
        now = time.monotonic()
        for job in jobs:
            if job.first_now:
                job.due = now
            else:
                job.schedule(now)

    def tick(self) -> float:
        """Seconds until the next job could be due (the shortest interval)."""
        return max(0.05, min(float(job.interval()) for job in self._jobs.values()))

    async def run_due(self, now: float | None = None) -> None:
        """Run every job that is due, each on its own."""
        now = time.monotonic() if now is None else now
        for job in self._jobs.values():
            if now >= job.due:
                job.schedule(now)
                await self._run(job)

    async def run(self, name: str) -> None:
        """Run one job now (and count its interval from now)."""
        job = self._jobs[name]
        job.schedule(time.monotonic())
        await self._run(job)

    def make_due(self, name: str) -> None:
        """Run ``name`` at the next tick (e.g. after its interval setting changed)."""
        self._jobs[name].due = 0.0

    @staticmethod
    async def _run(job: Job) -> None:
        try:
            await job.run()
        except Exception:  # the other jobs still run
            logger.exception(
                "The %s job failed; it runs again in %.1f s.", job.name, job.interval()
            )
