"""``python -m realtime.serve`` writes each frame to the socket at once
(``realtime.endpoints.writes``) and leaves to Twisted only what the socket does not take:
nothing may be lost, doubled or reordered where the two meet. Plain daphne, which buffers
every write, is run beside it as the reference."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

import realtime
from tests.servers import Server

PAD = "x" * 20_000
EVENTS = 200  # about 4 MB: far more than the socket buffers the small receive window allows


@pytest.mark.parametrize("server_name", ["realtime", "daphne"])
async def test_a_reader_that_falls_behind_gets_every_frame_once_in_order(
    daphne_server: Callable[..., Server], server_name: str
) -> None:
    server = daphne_server(server=server_name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel fills up at once
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    url = f"{server.ws_url}/realtime/ws/?batch=1"
    async with connect(
        url,
        sock=sock,
        origin=Origin(f"http://127.0.0.1:{server.port}"),
        max_queue=1,  # the client stops reading the socket while frames wait for recv()
        max_size=None,
        compression=None,
        ping_interval=None,
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "subscribe", "stream": "public:slow"}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        for n in range(EVENTS // 2):  # nobody reads meanwhile: the server's writes back up
            await realtime.apublish("public:slow", "big", {"n": n, "pad": PAD})

        async def publish_rest() -> None:  # new writes while Twisted holds older ones
            for n in range(EVENTS // 2, EVENTS):
                await realtime.apublish("public:slow", "big", {"n": n, "pad": PAD})
                await asyncio.sleep(0.002)

        publishing = asyncio.create_task(publish_rest())
        seen: list[int] = []
        frames = 0
        while len(seen) < EVENTS:
            frame: dict[str, Any] = json.loads(await ws.recv())
            for item in frame["frames"] if frame["type"] == "batch" else [frame]:
                frames += 1
                assert item["type"] == "event", item
                assert item["data"]["pad"] == PAD
                seen.append(item["seq"])
            await ws.send(json.dumps({"type": "received", "count": frames}))
            await asyncio.sleep(0.003)  # a slow reader
        await publishing
        assert seen == list(range(1, EVENTS + 1))
    assert server.running, server.log()
    assert "Traceback" not in server.log()
