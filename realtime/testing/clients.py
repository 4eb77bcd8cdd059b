"""What the in-process clients (``websocket``, ``sse``) share: no server, the real hub.

Built on ``channels.testing``: the project's ASGI application (``ASGI_APPLICATION``, else
the app's own routes) runs on the test's event loop, with its auth middleware, the real hub
and the real channel layer and database. Frames are decoded and checked with
``realtime.protocol``. The hub of the loop is closed when its last client closes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator
from django.conf import settings

from realtime.core.hub import close_hub

Frame = dict[str, Any]
Headers = Iterable[tuple[bytes, bytes]]

# Clients open on each event loop: the last to close closes the loop's hub.
_open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def application() -> Any:
    """The project's ASGI application, or the app's routes alone when it names none."""
    if getattr(settings, "ASGI_APPLICATION", None):
        from channels.routing import get_default_application

        return get_default_application()
    from channels.routing import ProtocolTypeRouter, URLRouter

    from realtime.routing import http_urlpatterns, websocket_urlpatterns

    return ProtocolTypeRouter(
        {"http": URLRouter(http_urlpatterns), "websocket": URLRouter(websocket_urlpatterns)}
    )


async def session_cookie(user: Any) -> tuple[bytes, bytes]:
    """A ``Cookie`` header signing ``user`` in, as Django's test client's ``force_login``."""

    def login() -> str:
        from django.test import Client

        client = Client()
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        return f"{name}={client.cookies[name].value}"

    return b"cookie", (await sync_to_async(login)()).encode()


async def next_output(communicator: ApplicationCommunicator, timeout: float) -> dict[str, Any]:
    """The application's next message. ``TimeoutError`` leaves the application running
    (``receive_output`` would cancel it); an application that failed raises its error."""
    get = asyncio.ensure_future(communicator.output_queue.get())
    ended = asyncio.shield(communicator.future)
    done, _ = await asyncio.wait({get, ended}, timeout=timeout, return_when="FIRST_COMPLETED")
    if get in done:
        return dict(get.result())
    get.cancel()
    if ended in done:
        ended.result()
        raise AssertionError("the application ended without sending what was awaited")
    raise TimeoutError


class BaseClient:
    """What both clients share: the application, the sign-in, the hub's lifetime."""

    def __init__(self, user: Any, headers: Headers | None, app: Any) -> None:
        self.user = user
        self.headers = list(headers or [])
        self.app = app if app is not None else application()
        self._counted: asyncio.AbstractEventLoop | None = None

    async def _headers(self) -> list[tuple[bytes, bytes]]:
        if self.user is None:
            return self.headers
        return [*self.headers, await session_cookie(self.user)]

    def _opened(self) -> None:
        loop = asyncio.get_running_loop()
        _open[loop] = _open.get(loop, 0) + 1
        self._counted = loop

    async def _closed(self) -> None:
        loop, self._counted = self._counted, None
        if loop is None:
            return
        _open[loop] -= 1
        if not _open[loop]:
            del _open[loop]
            await close_hub()

    async def connect(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
