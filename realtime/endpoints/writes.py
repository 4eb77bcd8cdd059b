"""Writes under daphne that go to the socket at once, not on the reactor's next turn.

Twisted's TCP transport buffers every ``write()`` and sends it when the reactor next reports
the socket writable (twisted/twisted#5303, open since 2011). Under daphne, whose reactor is
Twisted's asyncio reactor, that is two ``epoll_ctl`` calls and a loop callback around each
``send()``: the hub writes each connection once per pass (``realtime.bus.pacing``), so there
is nothing left for the buffer to join, and at 100 events/s to 500 subscribers that detour
was about a quarter of a server's CPU (docs/performance.md). ``write_now`` sends when
the transport has nothing buffered and takes the ordinary path for the rest: what the socket
did not take, a transport with something queued (order is kept), TLS, a paused or pull
producer, a closing connection. Errors are left to that path too, so a lost connection is
noticed as before.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sending at once where that changes nothing but the time."""
    if (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        # HTTPChannel stays registered as a streaming producer after the upgrade: while
        # it is not paused, a write that leaves nothing buffered owes it nothing.
        and (transport.producer is None or transport.streamingProducer)
        and not transport.producerPaused
        and not transport._tempDataLen
        and transport.offset >= len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            if sent >= len(data):
                return
            data = data[sent:]
    transport.write(data)
