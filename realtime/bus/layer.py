"""The channel layer the app uses, and the bound on layer calls in flight.

Every layer call of the core holds a slot here first (``slot``): channels-redis takes a
connection from redis-py's pool for every call, and redis-py 8's asyncio pool raises
``MaxConnectionsError`` ("Too many connections") once 100 are in use instead of waiting.
Two thousand clients leaving at once made as many ``group_discard`` calls, most of which
failed; with the slots, bursts queue for a moment instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, cast

from channels.layers import get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from realtime.conf import realtime_settings

# Layer calls in flight per event loop: under the pool's 100, leaving room for the hub's
# receive and for code of the project's own that uses the same layer.
LAYER_CONCURRENCY = 50

_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


class Layer(Protocol):
    """What the app uses of a channel layer (every Channels layer has it).

    Messages are the ``TypedDict``s of ``realtime.bus.messages``, which a layer takes as the
    plain dicts they are.
    """

    async def new_channel(self, prefix: str = ...) -> str: ...

    async def send(self, channel: str, message: Any) -> None: ...

    async def receive(self, channel: str) -> dict[str, Any]: ...

    async def group_add(self, group: str, channel: str) -> None: ...

    async def group_discard(self, group: str, channel: str) -> None: ...

    async def group_send(self, group: str, message: Any) -> None: ...

    def require_valid_group_name(self, name: str) -> bool: ...

    def require_valid_channel_name(self, name: str, receive: bool = False) -> bool: ...


def layer() -> Layer:
    """The channel layer named by ``REALTIME["CHANNEL_LAYER"]``."""
    found = get_channel_layer(realtime_settings.CHANNEL_LAYER)
    if found is None:
        raise ImproperlyConfigured(
            f"realtime needs a channel layer: CHANNEL_LAYERS has no "
            f"{realtime_settings.CHANNEL_LAYER!r} alias."
        )
    return cast(Layer, found)


T = TypeVar("T")


def loop_local(store: dict[asyncio.AbstractEventLoop, T], make: Callable[[], T]) -> T:
    """The running loop's entry of ``store``, made on first use; closed loops' are dropped
    (a test suite runs many loops, and asyncio objects belong to one)."""
    loop = asyncio.get_running_loop()
    found = store.get(loop)
    if found is None:
        for old in [old for old in store if old.is_closed()]:
            del store[old]
        found = store[loop] = make()
    return found


@asynccontextmanager
async def slot() -> AsyncIterator[None]:
    """Hold one of the running loop's ``LAYER_CONCURRENCY`` slots for a layer call."""
    async with loop_local(_slots, lambda: asyncio.Semaphore(LAYER_CONCURRENCY)):
        yield


def close_with_loop(
    loop: asyncio.AbstractEventLoop,
    close: Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, None]],
) -> None:
    """Run ``close(loop)`` when ``loop`` closes, as channels-redis closes its pools (its
    ``_wrap_close``): a loop that ends (``async_to_sync``'s, a test's) takes a backplane's
    connection with it."""
    original = loop.close

    def wrapper(self: asyncio.AbstractEventLoop) -> None:
        self.close = original  # type: ignore[method-assign]
        try:
            loop.run_until_complete(close(loop))
        except Exception:
            logging.getLogger("realtime.bus").debug(
                "Closing a backplane connection with its loop failed.", exc_info=True
            )
        original()

    # A loop whose methods cannot be replaced (a C type without a __dict__) keeps the
    # connection for the life of the process, as a server's own loop does anyway.
    with contextlib.suppress(AttributeError, TypeError):
        loop.close = types.MethodType(wrapper, loop)  # type: ignore[method-assign]
