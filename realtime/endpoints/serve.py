"""``python -m realtime.serve``: daphne, refusing client messages over ``MAX_FRAME_SIZE``
and draining on SIGTERM.

It takes daphne's command line as it is (``python -m realtime.serve -b 127.0.0.1 -p 8000
myproject.asgi:application``, every daphne option included) and changes these things:

* ``--websocket-max-message-size`` and ``--websocket-max-frame-size`` default to the app's
  ``MAX_FRAME_SIZE`` (64 KiB) rather than daphne's 1 MiB. Autobahn, daphne's WebSocket layer,
  checks these limits as each frame's header arrives, so a larger message is refused before
  its payload is read; none is held in memory. Options given on the command line win.
* Autobahn fails such a connection with a close frame, code 1009 ("message too big"), instead
  of aborting TCP, which clients see as 1006: its ``failByDrop`` option, on by default and
  left on by daphne, is turned off. The same goes for the other failures autobahn detects
  itself: a protocol error (1002) and text that is not UTF-8 (1007).
* Autobahn's ``_connectionMade`` pretty-prints the connection's whole configuration for a
  debug log line on every connection, whether debug logging is on or not: about a tenth of
  a handshake's CPU (py-spy, docs/performance.md). Connections here format it only if that
  line is logged; the same goes for the debug line of every read and every write.
* What the server sends is not held to those limits: they guard the server against its
  clients, and autobahn applied them to its own frames too (a catch-up's ``batch`` frame
  over 64 KiB failed and closed the connection).
* A WebSocket frame goes to the socket when it is sent, not when the reactor next finds the
  socket writable (``realtime.endpoints.writes``, twisted/twisted#5303): the hub already
  writes each connection once per pass, and the detour cost about a quarter of a server's CPU.
* On SIGTERM (or SIGINT) the process drains before daphne cancels its connections: it stops
  listening and runs ``Hub.drain`` (clients told to reconnect elsewhere with close code 1012
  and a delay each, the lease and presence removed at once), within ``DRAIN_TIMEOUT``
  (docs/operations.md).

In autobahn 26.11, ``WebSocketProtocol.onMessageFrameBegin`` checks the limits and calls
``_max_message_size_exceeded``, then ``_fail_connection``, which drops or closes as
``failByDrop`` says; daphne 4.2.3 hands its limits over in ``Server.run``.

``docs/deployment.md`` has the command line to use; ``docs/protocol.md`` the close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pprint
import re
import sys
import time
from typing import Any

# daphne.server installs Twisted's asyncio reactor; it must come before anything else of
# Twisted's, so daphne.cli (which imports it) goes first.
from daphne.cli import CommandLineInterface as DaphneCommandLineInterface  # type: ignore[import-untyped]
from daphne.server import Server as DaphneServer  # type: ignore[import-untyped]
from daphne.ws_protocol import (  # type: ignore[import-untyped]
    WebSocketProtocol as DaphneWebSocketProtocol,
)
from django.core.exceptions import ImproperlyConfigured
from txaio.tx import _no_op

from realtime.conf import realtime_settings
from realtime.endpoints.writes import write_now

logger = logging.getLogger("realtime.serve")

# The limits daphne's CLI and runserver set when not told otherwise.
DAPHNE_DEFAULT_LIMIT = 1024 * 1024

# daphne passed no size limits to autobahn before 4.2.2, so messages were unlimited
# (CVE-2026-44545); ``websocket_max_message_size`` arrived with that release.
DAPHNE_WITH_LIMITS = (4, 2, 2)


def daphne_version() -> tuple[int, ...]:
    """The installed daphne's version as a tuple of ints (``(4, 2, 3)``); reads no Twisted."""
    import daphne  # type: ignore[import-untyped]  # the package alone: installs no reactor

    return tuple(int(part) for part in re.findall(r"\d+", daphne.__version__)[:3])


def max_frame_size() -> int:
    """``MAX_FRAME_SIZE`` as a positive int; ImproperlyConfigured otherwise (0 would tell
    autobahn "no limit")."""
    value = realtime_settings.MAX_FRAME_SIZE
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ImproperlyConfigured(
            f"REALTIME['MAX_FRAME_SIZE'] must be a positive number of bytes, not {value!r}."
        )
    return value


class _Formatted:
    """``pprint.pformat(value)`` computed when a log line is formatted, not before."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(pprint.pformat(self.value), spec)

    def __str__(self) -> str:
        return pprint.pformat(self.value)


class WebSocketProtocol(DaphneWebSocketProtocol):  # type: ignore[misc]
    """daphne's protocol, with frames written to the socket at once and without autobahn's
    eager ``pformat`` of its configuration.

    autobahn 26.11 ``WebSocketProtocol._connectionMade`` calls
    ``self.log.debug("\n{attrs}", attrs=pformat(configAttrLog))``: the arguments are built
    before txaio sees the level. For the length of that call the module's ``pformat`` defers
    the work; the reactor runs one callback at a time, so nothing else sees the swap.
    """

    maxMessagePayloadSize: int  # autobahn's option, set per connection by its factory

    def handle_reply(self, message: dict[str, Any]) -> None:
        # daphne 4.2.3 drops an ASGI ``websocket.close``'s ``reason``, and autobahn's
        # ``sendClose`` refuses codes other than 1000 and 3000-4999, 1012 ("Service
        # Restart", RFC 6455's registry) among them. The drain's close carries both: it is
        # sent with ``sendCloseFrame``, what autobahn's own failures (1002, 1009) use.
        if message.get("type") == "websocket.close" and self.state == self.STATE_OPEN:
            code = message.get("code") or 1000
            reason = message.get("reason") or ""
            if reason or not (code == 1000 or 3000 <= code <= 4999):
                # A close frame's reason holds 123 bytes; cut on a character boundary.
                cut = reason.encode()[:123].decode("utf-8", "ignore").encode()
                self.sendCloseFrame(code=code, reasonUtf8=cut)
                return
        super().handle_reply(message)

    def serverSend(self, content: str | bytes, binary: bool = False) -> None:
        # autobahn holds what it sends to the limit it holds clients to
        # (``maxMessagePayloadSize``, MAX_FRAME_SIZE here), so a ``batch`` frame of a catch-up
        # or a busy pass (up to 256 KiB, realtime.endpoints.connection.BATCH_BYTES) failed
        # with PayloadExceededError and closed the connection. The limit guards the server
        # against its clients; the app bounds what it sends itself.
        limit = self.maxMessagePayloadSize
        self.maxMessagePayloadSize = 0
        try:
            super().serverSend(content, binary)
        finally:
            self.maxMessagePayloadSize = limit

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every frame autobahn sends comes through here. Sent at once (realtime.endpoints.
        # writes); and autobahn 26.11 builds the arguments of a debug log line per write
        # (``hltype(self.sendData)``) whatever the level, which this path skips too.
        if sync or chopsize or self.send_queue or self.logOctets:
            super().sendData(data, sync, chopsize)
            return
        write_now(self.transport, data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in (self.STATE_CONNECTING, self.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)

    def dataReceived(self, data: bytes) -> None:
        # autobahn 26.11 ``WebSocketAdapterProtocol.dataReceived`` builds its debug line's
        # arguments (``hltype``, ``hlval``: click styles) before txaio sees the level, on every
        # read: 2-3 % of a handshake's CPU. txaio binds a disabled level to ``_no_op``.
        if self.log.debug is _no_op:
            self._dataReceived(data)
        else:
            super().dataReceived(data)

    def _connectionMade(self) -> None:
        from autobahn.websocket import protocol

        setattr(protocol, "pformat", _Formatted)  # noqa: B010 - not part of its typed API
        try:
            super()._connectionMade()
        finally:
            setattr(protocol, "pformat", pprint.pformat)  # noqa: B010


class Server(DaphneServer):  # type: ignore[misc]
    """daphne's server with the limits above; the CLI builds it after loading the ASGI app, so
    the settings are ready here. A limit of ``None`` means ``MAX_FRAME_SIZE``."""

    def __init__(
        self,
        *args: Any,
        websocket_max_message_size: int | None = None,
        websocket_max_frame_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        limit = max_frame_size()
        message = limit if websocket_max_message_size is None else websocket_max_message_size
        # A frame larger than the message limit could only ever be refused.
        frame = message if websocket_max_frame_size is None else websocket_max_frame_size
        super().__init__(
            *args, websocket_max_message_size=message, websocket_max_frame_size=frame, **kwargs
        )
        if message == 0 or message > limit:
            logger.warning(
                "WebSocket messages up to %s are read into memory before the app refuses those "
                "over MAX_FRAME_SIZE (%d bytes) with frame_too_large; leave out "
                "--websocket-max-message-size to refuse them with close code 1009 instead.",
                "any size" if message == 0 else f"{message} bytes",
                limit,
            )
        elif message < limit:
            logger.warning(
                "WebSocket messages over %d bytes are refused (close code 1009), although "
                "MAX_FRAME_SIZE allows %d.",
                message,
                limit,
            )

    # --- draining on SIGTERM ----------------------------------------------------------
    # Twisted turns SIGTERM (and SIGINT) into ``reactor.stop()``, which first runs the
    # "before shutdown" triggers and waits for the Deferreds they return. daphne registers
    # one, ``kill_all_applications``, which cancels every connection's application at once
    # (clients saw 1006, and the hub never removed its lease). Triggers of one phase run side
    # by side, so a trigger of our own could not go first: this override drains, then lets
    # daphne cancel what is left.
    def listen_success(self, port: Any) -> None:
        self._ports = [*getattr(self, "_ports", []), port]
        super().listen_success(port)

    def kill_all_applications(self) -> Any:
        from twisted.internet import defer

        drained = defer.Deferred.fromFuture(asyncio.ensure_future(self.drain()))
        drained.addErrback(lambda failure: logger.error("Draining failed: %s", failure.value))
        drained.addBoth(lambda _: DaphneServer.kill_all_applications(self))
        return drained

    async def drain(self) -> None:
        """Stop listening, then drain the hub (``Hub.drain``), within ``DRAIN_TIMEOUT``."""
        # Imported here: the models under the hub need Django set up, which loading the ASGI
        # application does after this module is imported.
        from realtime.core.hub import current_hub

        began = time.monotonic()
        for port in getattr(self, "_ports", []):
            port.stopListening()
        hub = current_hub()
        if hub is not None:
            timeout = float(realtime_settings.DRAIN_TIMEOUT)
            # The hub bounds each of its steps; this bounds the whole.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout + 0.5):
                    await hub.drain(timeout)
        logger.info("Drained in %.2f s; exiting.", time.monotonic() - began)

    # daphne builds its WebSocket factory inside run() and has no option for ``failByDrop``
    # or the protocol class;
    # the assignment is the one moment between building the factory and serving with it
    # (each connection copies the factory's options when it is made).
    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        factory.setProtocolOptions(failByDrop=False)
        factory.protocol = WebSocketProtocol
        self._ws_factory = factory


class CommandLineInterface(DaphneCommandLineInterface):  # type: ignore[misc]
    """daphne's command line, serving with :class:`Server`."""

    description = (
        "daphne for realtime: WebSocket messages over REALTIME['MAX_FRAME_SIZE'] are refused "
        "with close code 1009 (see docs/deployment.md)"
    )
    server_class = Server

    def __init__(self) -> None:
        super().__init__()
        self.parser.prog = "python -m realtime.serve"
        # None: MAX_FRAME_SIZE, known only once the ASGI application has set Django up.
        self.parser.set_defaults(websocket_max_message_size=None, websocket_max_frame_size=None)


def main(argv: list[str] | None = None) -> None:
    if daphne_version() < DAPHNE_WITH_LIMITS:
        raise SystemExit(
            f"realtime.serve needs daphne >= {'.'.join(map(str, DAPHNE_WITH_LIMITS))}: older "
            "versions set no WebSocket message size limit at all."
        )
    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
