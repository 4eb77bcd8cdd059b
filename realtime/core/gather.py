"""Ask every live server process for its figures, over the backplane (scatter-gather).

One ``realtime.stats.request`` goes to the control group, which every hub joins; each hub
answers on the reply channel with its ``Hub.describe()`` (identity, counters, rates, active
alerts). Replies are collected until one per live lease (``Server`` rows not expired) has
arrived, or the timeout passes. So any process — the one a load balancer sent a metrics
scrape to, an admin page, ``manage.py realtime_status`` — sees every process on every
machine, and a missing answer shows as ``expected > len(replies)`` instead of as a silent
zero.

A process appears once its hub has started, i.e. after its first connection: before that it
holds no lease and nothing to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from realtime.bus import HUB_CHANNEL_PREFIX, backplane, control_send, messages
from realtime.exceptions import SyncInAsyncContext
from realtime.models import Server

logger = logging.getLogger("realtime.gather")


@dataclass
class Gathered:
    """What a scatter-gather collected: one ``describe()`` per answering process."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    expected: int = 0  # live leases when the request went out
    elapsed: float = 0.0  # seconds the gather took
    error: str | None = None  # why nothing could be asked (no channel layer, layer down)

    @property
    def reporting(self) -> int:
        return len(self.replies)

    @property
    def complete(self) -> bool:
        return self.error is None and self.reporting >= self.expected


def live_server_count() -> int:
    return Server.objects.filter(expires_at__gt=timezone.now()).count()


async def agather(within: float = 1.0) -> Gathered:
    """Every live process's ``describe()``, collected for at most ``within`` seconds."""
    began = time.monotonic()
    # sync_to_async, not Channels' database_sync_to_async: callers are HTTP views and
    # commands, whose request cycle (or exit) closes the connection; closing it here would
    # also close the caller's, e.g. a test's transaction.
    result = Gathered(expected=await sync_to_async(live_server_count)())
    if result.expected == 0:
        return result  # no hub is running anywhere: nobody would answer
    seen: set[str] = set()
    channel: str | None = None
    try:
        layer = backplane()
        # The hub's prefix: the reply is popped by whichever receive of this process runs
        # (``realtime.bus.groups.HUB_CHANNEL_PREFIX``).
        channel = await layer.new_channel(HUB_CHANNEL_PREFIX)
        await control_send(messages.stats_request(channel))
        deadline = began + within
        while len(result.replies) < result.expected:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation
                # (python/cpython#86296), and this loop would outlive its caller.
                async with asyncio.timeout(left):
                    message = await layer.receive(channel)
            except TimeoutError:
                break
            reply = messages.parse(message)
            if reply is None or reply["type"] != "realtime.stats.reply" or reply["server"] in seen:
                continue
            seen.add(reply["server"])
            result.replies.append({k: v for k, v in reply.items() if k != "type"})
    except ImproperlyConfigured as exc:
        result.error = str(exc)
    except Exception as exc:
        logger.warning("Gathering server figures failed.", exc_info=True)
        result.error = f"backplane: {exc.__class__.__name__}: {exc}"
    if channel is not None:
        with contextlib.suppress(Exception):
            await layer.close_channel(channel)
    result.replies.sort(key=lambda r: (r.get("hostname", ""), r.get("pid", 0)))
    result.elapsed = time.monotonic() - began
    return result


def gather(within: float = 1.0) -> Gathered:
    """Sync twin of ``agather`` (management commands, sync views)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return async_to_sync(agather)(within)
    raise SyncInAsyncContext(
        "realtime.core.gather.gather() was called from a running event loop; "
        "use `await realtime.core.gather.agather(...)` in async code."
    )
