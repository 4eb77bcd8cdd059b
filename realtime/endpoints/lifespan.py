"""The ASGI ``lifespan`` application: the server's shutdown drains the process's hub.

``python -m realtime.serve`` drains on SIGTERM by itself (daphne has no lifespan). Under
uvicorn and hypercorn, route ``"lifespan"`` here (``realtime.routing.lifespan``) so their
shutdown runs ``Hub.drain``: they close the connections first themselves (uvicorn sends 1012
without a delay), so what the drain adds there is the lease, the connection records and the
presence removed at once, the leaves sent, instead of waiting for another process's sweep.
"""

from __future__ import annotations

from realtime.core.hub import current_hub
from realtime.endpoints.connection import Receive, Scope, Send


async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``lifespan.startup`` at once; on ``lifespan.shutdown``, drain the hub (within
    ``DRAIN_TIMEOUT``) before answering."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            hub = current_hub()
            if hub is not None:
                await hub.drain()
            await send({"type": "lifespan.shutdown.complete"})
            return
