"""The async core's database lanes: connections kept between calls, given back when idle."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection

from realtime.storage import dbthreads

pytestmark = pytest.mark.django_db(transaction=True)


def raw_connection() -> tuple[int, int | None]:
    """This thread's id and its open DB-API connection's (None once closed)."""
    connection.ensure_connection()
    return threading.get_ident(), id(connection.connection)


def is_open() -> bool:
    return connection.connection is not None


async def test_a_lane_keeps_its_connection_until_it_is_idle(monkeypatch) -> None:
    monkeypatch.setattr(dbthreads, "IDLE_CLOSE", 0.2)
    lane = dbthreads.Lane("test-lane")
    try:
        first = await lane.run(raw_connection)
        for _ in range(5):
            assert await lane.run(raw_connection) == first  # same thread, same connection
        assert await lane.run(is_open)
        await asyncio.sleep(0.5)
        assert not await lane.run(is_open)  # closed after IDLE_CLOSE without calls
        assert (await lane.run(raw_connection))[0] == first[0]
    finally:
        lane.close()


async def test_calls_take_the_least_busy_lane_and_sqlite_has_one() -> None:
    lanes = dbthreads.lanes()
    assert lanes is dbthreads.lanes()
    expected = 1 if connection.vendor == "sqlite" else dbthreads.PARALLEL
    assert len(lanes) == expected
    seen = await asyncio.gather(*(dbthreads.in_lane(raw_connection)() for _ in range(20)))
    assert len({thread for thread, _ in seen}) == expected


async def test_an_exception_reaches_the_caller_and_the_lane_goes_on() -> None:
    lane = dbthreads.Lane("test-lane")

    def fail() -> None:
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await lane.run(fail)
        assert await lane.run(lambda: 42) == 42
    finally:
        lane.close()


async def test_a_group_never_waits_behind_single_calls() -> None:
    """Group commits have a lane of their own: a slow single call does not hold them up."""
    from realtime.storage import groupcommit

    release = threading.Event()
    busy = [asyncio.ensure_future(dbthreads.in_lane(release.wait)(5)) for _ in dbthreads.lanes()]
    try:
        committer = groupcommit.GroupCommitter(lambda group: [n + 1 for n in group])
        async with asyncio.timeout(2):
            assert await committer.submit(1) == 2  # while every lane is busy
    finally:
        release.set()
        await asyncio.gather(*busy)
