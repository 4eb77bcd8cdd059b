"""The group committer's own rules, with a trivial commit function (no database needed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime.storage import dbthreads, groupcommit


async def test_a_call_that_arrives_while_the_idle_thread_closes_its_connections_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing the idle connections takes a moment; a call made meanwhile must not wait for
    a drain task that is about to end (it did: the call was never committed). The lane
    closes them on its own thread, in line with its calls, so the call simply follows."""

    class SlowConnections:  # stands in for django.db.connections to widen that moment
        def close_all(self) -> None:
            time.sleep(0.3)

        def all(self, initialized_only: bool = False) -> list[object]:
            return []

    dbthreads.lanes()  # this loop's lanes, made before `connections` is replaced
    monkeypatch.setattr(dbthreads, "IDLE_CLOSE", 0.05)
    monkeypatch.setattr(dbthreads, "connections", SlowConnections())
    committer = groupcommit.GroupCommitter(lambda group: [n * 10 for n in group])
    assert await committer.submit(1) == 10
    await asyncio.sleep(0.15)  # idle: now closing its connections for 0.3 s
    async with asyncio.timeout(3):
        assert await committer.submit(2) == 20


async def test_concurrent_calls_share_a_group_and_get_their_own_results() -> None:
    groups: list[list[int]] = []

    def commit(group: list[int]) -> list[int | BaseException]:
        groups.append(group)
        return [ValueError(n) if n == 3 else n for n in group]

    committer = groupcommit.GroupCommitter(commit)
    results = await asyncio.gather(*(committer.submit(n) for n in range(5)), return_exceptions=True)
    assert results[:3] == [0, 1, 2] and results[4] == 4
    assert isinstance(results[3], ValueError)
    assert groups == [[0, 1, 2, 3, 4]]
