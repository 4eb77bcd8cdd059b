"""Hundreds of clients opening and leaving at once, each on a stream of its own.

Every join and leave is a channel-layer call; redis-py's pool refuses a call past 100 in
use instead of waiting, so a burst of leaves once left the process in most of its groups
(``realtime.bus`` bounds them). Real daphne, Redis and database.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from realtime.bus.groups import group_name
from tests.servers import WSClient

CLIENTS = 300


async def test_a_burst_of_subscribers_joins_and_leaves_every_group(
    daphne_server, redis_url: str, redis_prefix: str
) -> None:
    server = daphne_server({"REALTIME_MAX_CONNECTIONS_PER_IP": "1000"})
    streams = [f"public:burst:{n}" for n in range(CLIENTS)]
    clients = [WSClient(server.ws_url + "/realtime/ws/") for _ in streams]

    async def open_one(client: WSClient, stream: str) -> None:
        await client.connect(timeout=30)
        await client.recv_until(lambda f: f["type"] == "welcome", timeout=30)
        await client.send_json({"type": "subscribe", "id": 1, "stream": stream})
        await client.recv_until(lambda f: f["type"] == "subscribed", timeout=30)

    redis = aioredis.from_url(redis_url)
    keys = [f"{redis_prefix}:group:{group_name(stream)}" for stream in streams]

    async def members() -> list[int]:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zcard(key)
            return list(await pipe.execute())

    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(open_one(c, s) for c, s in zip(clients, streams, strict=True)))
        assert await members() == [1] * CLIENTS  # this process, in every group
        await asyncio.gather(*(client.connection.close() for client in clients))
        async with asyncio.timeout(20):
            while left := sum(await members()):
                await asyncio.sleep(0.2)
        assert left == 0
    finally:
        await redis.aclose()
    assert "Leaving the group" not in server.log()
    assert "Joining the group" not in server.log()
