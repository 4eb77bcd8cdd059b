"""Periodic jobs (``realtime.core.jobs``): each runs when due and fails on its own. Pure."""

from __future__ import annotations

import logging

from realtime.core.jobs import Job, Jobs


def recorder(ran: list[str], name: str, fail: bool = False):
    async def run() -> None:
        ran.append(name)
        if fail:
            raise RuntimeError(f"{name} broke")

    return run


async def test_a_failing_job_is_logged_and_the_others_still_run(caplog):
    ran: list[str] = []
    jobs = Jobs(
        [
            Job("first", lambda: 10.0, recorder(ran, "first"), first_now=True),
            Job("broken", lambda: 10.0, recorder(ran, "broken", fail=True), first_now=True),
            Job("last", lambda: 10.0, recorder(ran, "last"), first_now=True),
        ]
    )
    with caplog.at_level(logging.ERROR, logger="realtime.hub"):
        await jobs.run_due()
    assert ran == ["first", "broken", "last"]
    assert "The broken job failed" in caplog.text and "broken broke" in caplog.text
    await jobs.run_due()  # none is due again before its interval
    assert ran == ["first", "broken", "last"]


async def test_jobs_run_when_due_and_can_be_made_due():
    ran: list[str] = []
    jobs = Jobs(
        [
            Job("soon", lambda: 0.5, recorder(ran, "soon")),
            Job("later", lambda: 60.0, recorder(ran, "later"), jitter=True),
        ]
    )
    assert jobs.tick() == 0.5
    await jobs.run_due()
    assert ran == []  # not first_now: one interval after start
    jobs.make_due("later")
    await jobs.run_due()
    assert ran == ["later"]
    await jobs.run("soon")
    assert ran == ["later", "soon"]
