"""Batched group sends (``realtime.bus.group_send_many``) over real Redis, and their fallback."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer

import realtime
from realtime import bus
from realtime.bus import messages
from tests.e2e.test_websocket import WS_PATH, subscribe
from tests.servers import Server, WSClient

pytestmark = pytest.mark.django_db(transaction=True)


def message(stream: str, seq: int) -> dict[str, Any]:
    return {"type": "realtime.event", "stream": stream, "seq": seq, "t": 1.0}


async def receive(layer: Any, channel: str, timeout: float = 3) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return dict(await layer.receive(channel))


async def assert_silent(layer: Any, channel: str) -> None:
    with pytest.raises(TimeoutError):
        pytest.fail(f"unexpected message: {await receive(layer, channel, 0.3)}")


async def test_each_channel_gets_one_message_with_everything_for_it_in_order() -> None:
    layer = get_channel_layer()
    assert bus.redis.batchable(layer)
    hub = await layer.new_channel("realtime.hub")  # a process-specific channel, as a hub's
    plain = "test-bus.plain"
    for group in ("g1", "g2", "g3"):
        await layer.group_add(group, hub)
    await layer.group_add("g2", plain)
    items = [("g1", message("a", 1)), ("g2", message("b", 1)), ("g3", message("c", 1))]
    items.append(("g1", message("a", 2)))
    await bus.group_send_many(items)
    got = await receive(layer, hub)
    assert got == {"type": "realtime.batch", "messages": [m for _, m in items]}
    assert await receive(layer, plain) == message("b", 1)  # one message travels as itself
    await assert_silent(layer, hub)
    await assert_silent(layer, plain)


async def test_a_batch_carries_at_most_batch_events_and_order_holds_across_calls() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel("realtime.hub")
    await layer.group_add("many", channel)
    singles = [("many", message("m", n)) for n in range(1, 251)]
    await bus.group_send_many(singles[:200])
    await bus.group_send_many(singles[200:])  # at once: its scores must follow the first's
    received = [await receive(layer, channel) for _ in range(3)]
    assert [len(messages.unbatch(m)) for m in received] == [100, 100, 50]
    seqs = [m["seq"] for batch in received for m in messages.unbatch(batch)]
    assert seqs == list(range(1, 251))
    await assert_silent(layer, channel)


def test_scores_increase_even_when_the_clock_does_not() -> None:
    now = time.time()
    first = bus.redis._scores(3, now)
    second = bus.redis._scores(2, now - 1.0)  # a clock step back, or the same microsecond
    scores = first + second
    assert scores == sorted(scores) and len(set(scores)) == 5


async def test_a_full_channel_drops_the_message_and_says_so(
    settings: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [redis_url],
                "prefix": f"test-bus-{time.time_ns()}:",
                "capacity": 2,
            },
        }
    }
    layer = get_channel_layer()
    channel = "test-bus.full"
    await layer.group_add("full", channel)
    for n in range(3):
        await bus.group_send_many([("full", message("f", n))])
    assert [(await receive(layer, channel))["seq"] for _ in range(2)] == [0, 1]
    await assert_silent(layer, channel)
    assert "1 of 1 layer messages dropped: their channels were full." in caplog.text


async def test_expired_members_get_nothing_and_leave_the_group(redis_url: str) -> None:
    layer = get_channel_layer()
    await layer.group_add("old", "test-bus.old")
    await layer.group_add("old", "test-bus.new")
    key = layer._group_key("old")
    stale = time.time() - layer.group_expiry - 10
    await layer.connection(layer.consistent_hash("old")).zadd(key, {"test-bus.old": stale})
    await bus.group_send_many([("old", message("o", 1))])
    assert (await receive(layer, "test-bus.new"))["seq"] == 1
    await assert_silent(layer, "test-bus.old")
    members = await layer.connection(layer.consistent_hash("old")).zrange(key, 0, -1)
    assert members == [b"test-bus.new"]


class OwnGroupSend(RedisChannelLayer):  # type: ignore[misc]
    """A project's layer that changes ``group_send``: the bus must keep calling it."""

    sent: list[str] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.append(group)
        await super().group_send(group, message)


@pytest.mark.parametrize("backend", ["in-memory", "subclass"])
async def test_other_layers_get_their_own_group_send_in_order(
    settings: Any, redis_url: str, backend: str
) -> None:
    if backend == "in-memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    else:
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": f"{__name__}.OwnGroupSend",
                "CONFIG": {"hosts": [redis_url], "prefix": f"test-bus-{time.time_ns()}:"},
            }
        }
    layer = get_channel_layer()
    assert not bus.redis.batchable(layer)
    await layer.group_add("x", "test-bus.x")
    await layer.group_add("y", "test-bus.x")
    items = [("x", message("x", n)) for n in range(1, 6)] + [("y", message("y", 1))]
    await bus.group_send_many(items)
    got = [await receive(layer, "test-bus.x") for _ in range(6)]
    assert [m["seq"] for m in got if m["stream"] == "x"] == [1, 2, 3, 4, 5]
    assert [m["type"] for m in got] == ["realtime.event"] * 6
    if backend == "subclass":
        assert sorted(OwnGroupSend.sent) == ["x"] * 5 + ["y"]


async def test_servers_unpack_a_batch_over_many_streams(daphne_server: Any) -> None:
    """Two processes, clients on 20 streams each; 20 concurrent publishes (one group commit,
    so each process gets them as one ``realtime.batch``) reach every client at once. The
    reconciler is slowed to 60 s so that only the batch can have delivered them."""
    env = {"REALTIME_RECONCILE_INTERVAL": "60"}
    servers: list[Server] = [daphne_server(env), daphne_server(env)]
    streams = [f"public:bus-{n}" for n in range(20)]
    clients = [await WSClient(s.ws_url + WS_PATH).connect() for s in servers]
    try:
        for client in clients:
            assert (await client.recv_json())["type"] == "welcome"
            for stream in streams:
                await subscribe(client, stream)
        await asyncio.gather(*(realtime.apublish(s, "tick", {"s": s}) for s in streams))
        for client in clients:
            frames = [await client.recv_json(timeout=3) for _ in streams]
            assert sorted((f["stream"], f["seq"]) for f in frames) == sorted(
                (s, 1) for s in streams
            )
    finally:
        for client in clients:
            await client.close()


@pytest.fixture(autouse=True)
def _quiet_layer_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="realtime.publish")


async def test_concurrent_joins_share_a_script_and_join_as_group_add_does(monkeypatch) -> None:
    """A hundred joins at once (a storm of handshakes on streams of their own) take a few
    ``add_many`` scripts, not two round trips each; each group then holds the channel with
    the membership score and expiry that ``group_add`` gives. A bad name fails its caller
    alone."""
    layer = get_channel_layer()
    assert bus.redis.joinable(layer)
    batches: list[int] = []
    real = bus.redis.add_many

    async def counting(found: Any, pairs: Any) -> None:
        batches.append(len(pairs))
        await real(found, pairs)

    monkeypatch.setattr(bus.redis, "add_many", counting)
    channel = await layer.new_channel("realtime.hub")
    groups = [f"join-{n}" for n in range(100)]
    before = time.time()
    results = await asyncio.gather(
        *(bus.joins.group_add(group, channel) for group in groups),
        bus.joins.group_add("not a valid group name", channel),
        return_exceptions=True,
    )
    assert results[:100] == [None] * 100
    assert isinstance(results[100], TypeError)
    assert sum(batches) == 100 and len(batches) <= 3, batches
    connection = layer.connection(layer.consistent_hash(groups[0]))
    for group in (groups[0], groups[-1]):
        key = layer._group_key(group)
        ((member, score),) = await connection.zrange(key, 0, -1, withscores=True)
        assert member.decode() == channel and before <= score <= time.time()
        assert 0 < await connection.ttl(key) <= layer.group_expiry
    await bus.group_send_many([(groups[-1], message("j", 1))])
    assert (await receive(layer, channel))["seq"] == 1


class OwnGroupAdd(RedisChannelLayer):  # type: ignore[misc]
    """A project's layer that changes ``group_add``: the joins must keep calling it."""

    added: list[str] = []

    async def group_add(self, group: str, channel: str) -> None:
        self.added.append(group)
        await super().group_add(group, channel)


async def test_a_layer_with_its_own_group_add_gets_it_per_join(
    settings: Any, redis_url: str
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": f"{__name__}.OwnGroupAdd",
            "CONFIG": {"hosts": [redis_url], "prefix": f"test-bus-{time.time_ns()}:"},
        }
    }
    layer = get_channel_layer()
    assert not bus.redis.joinable(layer)
    await asyncio.gather(*(bus.joins.group_add(f"own-{n}", "test-bus.own") for n in range(5)))
    assert sorted(OwnGroupAdd.added) == [f"own-{n}" for n in range(5)]
    await bus.group_send_many([("own-3", message("o", 1))])
    assert (await receive(layer, "test-bus.own"))["seq"] == 1
