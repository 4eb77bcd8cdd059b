"""``realtime.client`` without a server: the reconnect policy, reading server messages,
a subscription's positions (duplicates, gaps, resets), the publish queue and flow-control
counts. The end-to-end behaviour is in ``tests/e2e/test_python_client.py``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from realtime.client import Backoff, ClientError, Event, Gap, Reset, Snapshot
from realtime.client.backoff import ReconnectPolicy, backoff_delay, restart_delay
from realtime.client.liveness import Liveness, RateLimit
from realtime.client.publishing import PublishQueue
from realtime.client.subscription import Subscription
from realtime.client.transports import _frames
from realtime.protocol import batch_frame, event_frame, restart_reason

# --- backoff -----------------------------------------------------------------------------------


def test_full_jitter_ceilings_double_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=4.0)
    assert [backoff_delay(n, backoff, lambda: 0.999999) for n in range(6)] == pytest.approx(
        [0.5, 1.0, 2.0, 4.0, 4.0, 4.0], rel=1e-5
    )
    assert backoff_delay(3, backoff, lambda: 0.0) == 0.0  # full jitter: from zero, always
    assert backoff_delay(10_000, backoff, lambda: 0.5) == 2.0  # no overflow far out


def test_the_policy_counts_failures_and_starts_over_when_stable() -> None:
    draws = iter([0.5] * 10)
    policy = ReconnectPolicy(Backoff(base=1.0, cap=30.0), lambda: next(draws))
    assert [policy.retry(1006).delay for _ in range(3)] == [0.5, 1.0, 2.0]  # type: ignore[union-attr]
    policy.stable()
    retry = policy.retry(1006)
    assert retry is not None and (retry.attempt, retry.delay) == (0, 0.5)
    policy.forgive()
    assert policy.attempt == 0


def test_going_away_spreads_wider_and_rate_limited_starts_late() -> None:
    policy = ReconnectPolicy(Backoff(base=1.0, cap=100.0), lambda: 0.999)
    retry = policy.retry(1001)
    assert retry is not None and retry.attempt == 2 and retry.delay == pytest.approx(3.996)
    policy = ReconnectPolicy(Backoff(base=1.0, cap=100.0), lambda: 0.999)
    retry = policy.retry(4429)
    assert retry is not None and retry.attempt == 4


def test_a_draining_servers_delay_replaces_the_backoff_and_does_not_raise_it() -> None:
    policy = ReconnectPolicy(Backoff(base=1.0, cap=30.0), lambda: 0.999)
    for _ in range(3):
        policy.retry(1006)
    retry = policy.retry(1012, after=0.25)
    assert retry is not None and retry.delay == 0.25
    assert restart_delay(1012, restart_reason(1234)) == 1.234
    assert restart_delay(1012, "") is None  # a 1012 without a delay: the usual backoff
    assert restart_delay(1012, '{"retry": -1}') is None
    assert restart_delay(1012, '{"retry": true}') is None
    assert restart_delay(1012, "[1]") is None
    assert restart_delay(1001, restart_reason(10)) is None


def test_max_attempts_gives_up_and_4401_is_fatal() -> None:
    policy = ReconnectPolicy(Backoff(max_attempts=2))
    assert policy.retry(1006) is not None and policy.retry(1006) is not None
    assert policy.retry(1006) is None
    assert policy.is_fatal(4401) and not policy.is_fatal(4409)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


# --- reading messages ------------------------------------------------------------------------


def test_a_batch_is_read_as_its_frames_in_order() -> None:
    one = event_frame("s", 1, "e", "1", "2026-01-01T00:00:00.000Z")
    two = event_frame("s", 2, "e", "2", "2026-01-01T00:00:00.000Z")
    frames = _frames(batch_frame([one, two]))
    assert [f["seq"] for f in frames] == [1, 2]
    assert _frames(one)[0]["data"] == 1
    assert _frames("not json") == [] and _frames("[1, 2]") == [] and _frames("NaN") == []
    assert _frames('{"type": "batch", "frames": [1, {"type": "pong"}]}') == [{"type": "pong"}]


# --- a subscription's position ---------------------------------------------------------------


class NoRequests:
    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    async def _unsubscribe(self, sub: Subscription) -> None: ...

    async def _presence(self, sub: Subscription, meta: Any) -> None: ...


def subscribed(
    seq: int, recovered: bool = True, epoch: str = "e1", id: Any = None
) -> dict[str, Any]:
    return {
        "type": "subscribed",
        "id": id,
        "stream": "s",
        "epoch": epoch,
        "seq": seq,
        "recovered": recovered,
    }


def event(seq: int | None) -> dict[str, Any]:
    frame = {"type": "event", "stream": "s", "event": "tick", "data": seq, "ts": "t"}
    if seq is not None:
        frame["seq"] = seq
    return frame


async def drain(sub: Subscription) -> list[Any]:
    items = []
    while not sub._queue.empty():
        items.append(await anext(sub))
    return items


async def test_events_are_handed_over_once_and_in_order() -> None:
    sub = Subscription(NoRequests(), "s", since=0)
    await sub.handle_subscribed(subscribed(5))
    assert sub.ready.done() and sub.recovered is True
    for seq in (1, 2, 2, 1, 3):
        assert await sub.handle_event(event(seq))
    assert await sub.handle_event(event(None))  # ephemeral: no position
    assert not await sub.handle_event(event(5))  # 4 is missing: a gap to repair
    items = await drain(sub)
    assert [(i.seq, i.ephemeral) for i in items] == [
        (1, False),
        (2, False),
        (3, False),
        (None, True),
    ]
    assert sub.duplicates == 2 and sub.position == ("e1", 3)
    assert sub.subscribe_frame(9) == {
        "type": "subscribe",
        "id": 9,
        "stream": "s",
        "since": 3,
        "epoch": "e1",
    }


async def test_live_without_since_starts_at_the_head() -> None:
    sub = Subscription(NoRequests(), "s")
    assert "since" not in sub.subscribe_frame(1) and sub.cursor_entry() is None
    await sub.handle_subscribed(subscribed(41))
    assert sub.position == ("e1", 41)
    assert await sub.handle_event(event(42))
    assert [i.seq for i in await drain(sub)] == [42]


async def test_not_recovered_is_a_reset_then_history_from_its_start() -> None:
    resets: list[Reset] = []
    sub = Subscription(NoRequests(), "s", since=7, epoch="old", on_reset=resets.append)
    await sub.handle_subscribed(subscribed(3, recovered=False, epoch="new"))
    assert sub.position == ("new", 0) and sub.subscribe_frame(1)["since"] == 0
    for seq in (2, 3):  # retention kept 2..3: the first event starts the position
        await sub.handle_event(event(seq))
    items = await drain(sub)
    assert items[0] == Reset("s", "new", 3) and resets == [items[0]]
    assert [i.seq for i in items[1:]] == [2, 3]


async def test_snapshots_and_server_gaps_move_the_position() -> None:
    sub = Subscription(NoRequests(), "s", since=0)
    await sub.handle_subscribed(subscribed(0))
    await sub.handle_snapshot({"type": "snapshot", "stream": "s", "seq": 10, "data": {"x": 1}})
    await sub.handle_gap({"type": "gap", "stream": "s", "from": 11, "to": 20})
    assert await sub.handle_event(event(21))
    items = await drain(sub)
    assert items == [Snapshot("s", 10, {"x": 1}), Gap("s", 11, 20), Event("s", 21, "tick", 21, "t")]


async def test_a_repair_ignores_everything_until_its_own_subscribed() -> None:
    sub = Subscription(NoRequests(), "s", since=0)
    await sub.handle_subscribed(subscribed(0))
    await sub.handle_event(event(1))
    sub.resync(7)
    await sub.handle_event(event(3))  # waits for the resubscribe's reply
    await sub.handle_subscribed(subscribed(3, id=6))  # the old subscribe's reply
    await sub.handle_subscribed(subscribed(3, id=7))
    for seq in (2, 3):
        await sub.handle_event(event(seq))
    assert [i.seq for i in await drain(sub)] == [1, 2, 3]


async def test_a_full_buffer_makes_the_reader_wait() -> None:
    sub = Subscription(NoRequests(), "s", since=0, buffer=2)
    await sub.handle_subscribed(subscribed(0))
    await sub.handle_event(event(1))
    await sub.handle_event(event(2))
    third = asyncio.ensure_future(sub.handle_event(event(3)))
    await asyncio.sleep(0.01)
    assert not third.done()
    assert (await anext(sub)).seq == 1  # type: ignore[union-attr]
    await asyncio.wait_for(third, 1)
    sub.end()
    assert [i.seq for i in [await anext(sub), await anext(sub)]] == [2, 3]
    with pytest.raises(StopAsyncIteration):
        await anext(sub)


async def test_a_failed_subscription_raises_from_its_iteration() -> None:
    sub = Subscription(NoRequests(), "s")
    sub.fail(ClientError("no", code="forbidden"))
    with pytest.raises(ClientError) as refused:
        await sub.ready
    assert refused.value.code == "forbidden"
    with pytest.raises(ClientError):
        await anext(sub)


# --- publishing ------------------------------------------------------------------------------


async def test_a_lost_publish_goes_back_first_with_its_key() -> None:
    queue = PublishQueue(max_queue=2)
    a = queue.add("s", "e", 1, key=None, ephemeral=False, connected=True)
    b = queue.add("s", "e", 2, key="mine", ephemeral=False, connected=True)
    e = queue.add("s", "e", 3, key=None, ephemeral=True, connected=True)
    for n in range(1, 4):
        entry = queue.next()
        assert entry is not None
        queue.sent(entry, n)
    assert queue.next() is None
    assert a.key and len(a.key) == 32 and b.key == "mine" and e.key is None
    assert json.loads(json.dumps(a.frame(1)))["key"] == a.key
    assert "key" not in e.frame(3) and e.frame(3)["ephemeral"] is True
    queue.connection_lost()
    assert list(queue.waiting) == [a, b]
    with pytest.raises(ClientError) as lost:
        await e.future
    assert lost.value.code == "disconnected"
    with pytest.raises(ClientError) as full:
        queue.add("s", "e", 4, key=None, ephemeral=False, connected=False)
    assert full.value.code == "queue_full"
    queue.sent(a, 10)
    queue.sent(b, 11)
    queue.unsent(b)  # not sent after all: first in line again
    assert list(queue.waiting) == [b]
    queue.sent(b, 11)
    assert queue.acknowledged({"type": "ack", "id": 10, "seq": 5, "duplicate": True})
    assert (await a.future).duplicate is True
    assert queue.refused(11, ClientError("no", code="forbidden"))
    with pytest.raises(ClientError):
        await b.future


async def test_bad_publishes_are_refused_before_sending() -> None:
    queue = PublishQueue(max_queue=10)
    for kwargs in ({"key": "has space"}, {"key": "x" * 65}, {"key": "k", "ephemeral": True}):
        with pytest.raises(ClientError) as bad:
            queue.add("s", "e", None, connected=True, **{"ephemeral": False, **kwargs})  # type: ignore[arg-type]
        assert bad.value.code == "invalid_event"
    with pytest.raises(ClientError) as not_json:
        queue.add("s", "e", float("nan"), key=None, ephemeral=False, connected=True)
    assert not_json.value.code == "invalid_event"
    with pytest.raises(ClientError) as offline:
        queue.add("s", "e", None, key=None, ephemeral=True, connected=False)
    assert offline.value.code == "disconnected"


# --- flow control and liveness ---------------------------------------------------------------


def test_acknowledgements_every_quarter_window_at_most_every_100_frames() -> None:
    liveness = Liveness()
    liveness.opened(40)
    assert (liveness.received, liveness.ack_every) == (1, 10)
    for _ in range(8):
        liveness.count()
    assert not liveness.ack_due
    liveness.count()
    assert liveness.ack_due and liveness.acknowledge() == 10 and not liveness.unacknowledged
    liveness.opened(10_000)
    assert liveness.ack_every == 100


def test_silence_counts_only_while_reading() -> None:
    now = [100.0]
    liveness = Liveness(lambda: now[0])
    liveness.opened(None)
    assert not liveness.silent_for(1, last_heard=0)  # busy with a frame: not reading
    liveness.waiting_since = 100.0
    now[0] = 100.5
    assert not liveness.silent_for(1, last_heard=0)
    now[0] = 101.5
    assert liveness.silent_for(1, last_heard=0)


async def test_the_rate_limit_spaces_frames_after_a_burst() -> None:
    loop = asyncio.get_running_loop()
    limit = RateLimit(rate=100, burst=3)
    began = loop.time()
    for _ in range(5):
        await limit.take()
    assert 0.015 <= loop.time() - began < 0.5
