"""A failed write closes the connection; only a gone peer is logged quietly.

In process: the ASGI ``send`` here is a function that raises what a server raises once the
peer is gone (or what a bug would raise), which a real server cannot be made to do on cue.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from realtime.endpoints.websocket import WebSocketConnection

SCOPE = {"type": "websocket", "path": "/ws/", "headers": [], "query_string": b""}


class UnexpectedMessageError(Exception):
    """Named as hypercorn's: what it raises for a send after the close."""


def connection(error: Exception) -> WebSocketConnection:
    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise error

    return WebSocketConnection(SCOPE, receive, send)


@pytest.mark.parametrize(
    "error", [ConnectionResetError("reset by peer"), UnexpectedMessageError("closed")]
)
async def test_a_gone_peer_closes_the_connection_quietly(error, caplog):
    conn = connection(error)
    conn.queue('{"type":"event"}')
    with caplog.at_level(logging.DEBUG, logger="realtime.connection"):
        await conn.flush()
    assert conn.closed
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


async def test_any_other_write_error_is_a_warning_with_its_traceback(caplog):
    conn = connection(TypeError("an encoder's bug"))
    conn.queue('{"type":"event"}')
    with caplog.at_level(logging.DEBUG, logger="realtime.connection"):
        await conn.flush()
    assert conn.closed
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "closing it" in record.getMessage()
    assert record.exc_info is not None and "an encoder's bug" in str(record.exc_info[1])
