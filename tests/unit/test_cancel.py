"""``realtime.core.hub.cancel_and_wait``: a hub's tasks end on close even when a cancellation
is swallowed, as Python 3.11's ``asyncio.wait_for`` does (python/cpython#86296). Pure."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from realtime.core.hub import cancel_and_wait


async def swallows_the_first_cancellation(reached: asyncio.Event) -> None:
    """What the hub's reader did inside redis-py: ``wait_for`` returns its inner future's
    result although the task was cancelled, and the task goes back to waiting."""
    inner = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(inner.set_result, None)
    reached.set()
    try:
        await asyncio.wait_for(inner, timeout=10)
    except asyncio.CancelledError:
        if sys.version_info >= (3, 12):
            await asyncio.sleep(0)  # the bug is fixed there: swallow it by hand instead
        else:
            raise
    await asyncio.Event().wait()  # Redis's next blocking read


async def test_a_task_that_swallowed_a_cancellation_still_ends() -> None:
    reached = asyncio.Event()
    task = asyncio.create_task(swallows_the_first_cancellation(reached))
    await reached.wait()
    task.cancel()  # lands as ``inner`` completes: wait_for returns instead of raising
    await asyncio.wait([task], timeout=0.2)
    assert not task.done() and task.cancelling()  # one cancellation was not enough

    await cancel_and_wait([task], within=1.0)
    assert task.cancelled()


async def test_it_gives_up_after_within_and_says_so(caplog) -> None:
    stop = asyncio.Event()

    async def refuses() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    task = asyncio.create_task(refuses())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await cancel_and_wait([task], within=0.2)
    assert 0.2 <= loop.time() - began < 1.0
    assert "1 hub task(s) did not end" in caplog.text
    stop.set()
    await task
