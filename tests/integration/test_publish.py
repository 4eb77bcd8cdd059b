"""Publishing: stored first, fanned out after commit, nothing on rollback — over real Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

import realtime
from realtime.bus.groups import group_name
from realtime.exceptions import InvalidEvent, InvalidStream, SyncInAsyncContext
from realtime.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """A bare channel in the streams' groups: sees exactly what a hub would receive."""

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel = f"test-listener.{uuid.uuid4().hex}"

    async def join(self, *streams: str) -> None:
        for stream in streams:
            await self.layer.group_add(group_name(stream), self.channel)

    async def get(self, timeout: float = 3) -> dict:
        async with asyncio.timeout(timeout):
            return await self.layer.receive(self.channel)

    async def event(self, timeout: float = 3) -> dict:
        """The next event, whether it came alone or in a ``realtime.events`` message (the
        process's sender joins events of one stream that queue up behind a send)."""
        if not getattr(self, "queued", None):
            self.queued = flatten(await self.get(timeout))
        return self.queued.pop(0)

    async def assert_silent(self, wait: float = 0.4) -> None:
        with pytest.raises(TimeoutError):
            message = await self.get(wait)
            pytest.fail(f"unexpected fan-out: {message}")


def flatten(message: dict) -> list[dict]:
    """The single events (and other messages) one layer message carries, in order: a
    ``realtime.batch`` (several messages for one channel, ``realtime.bus``) and a
    ``realtime.events`` (several events of one stream) are unpacked."""
    singles = []
    for inner in message["messages"] if message["type"] == "realtime.batch" else [message]:
        singles += inner["events"] if inner["type"] == "realtime.events" else [inner]
    return singles


@pytest.fixture
def listener():
    # Each listener has a channel of its own, and the session a Redis prefix of its own: what
    # it leaves in Redis reaches nobody and expires.
    return Listener()


def stored(stream: str) -> list[int]:
    return list(Event.objects.filter(stream__name=stream).values_list("seq", flat=True))


async def test_apublish_stores_then_fans_out(listener):
    await listener.join("s")
    event = await realtime.apublish("s", "thing.happened", {"n": 1})
    assert event.seq == 1 and event.pk is not None
    message = await listener.get()
    assert message["type"] == "realtime.event"
    assert (message["stream"], message["seq"], message["event"]) == ("s", 1, "thing.happened")
    assert message["epoch"] == event.stream.epoch
    frame = json.loads(message["frame"])
    assert frame["data"] == {"n": 1} and frame["seq"] == 1 and frame["type"] == "event"


async def test_sync_publish_in_a_transaction_waits_for_commit(listener):
    await listener.join("s")
    committed = asyncio.Event()

    def work() -> None:
        with transaction.atomic():
            realtime.publish("s", "e", 1)
            realtime.publish("s", "e", 2)
            # Still inside the transaction: nothing may have been sent yet.
            asyncio.run_coroutine_threadsafe(check_silent(), loop).result(timeout=5)
        committed.set()

    async def check_silent() -> None:
        await listener.assert_silent(0.3)

    loop = asyncio.get_running_loop()
    await sync_to_async(work)()
    assert committed.is_set()
    assert [(await listener.event())["seq"] for _ in range(2)] == [1, 2]


async def test_rollback_publishes_nothing(listener):
    await listener.join("s")

    def work() -> None:
        with transaction.atomic():
            realtime.publish("s", "e", 1)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await sync_to_async(work)()
    await listener.assert_silent()
    assert await sync_to_async(stored)("s") == []


async def test_nested_rollback_sends_only_what_committed(listener):
    await listener.join("s")

    def work() -> None:
        with transaction.atomic():
            realtime.publish("s", "outer", 1)
            try:
                with transaction.atomic():
                    realtime.publish("s", "inner", 2)
                    raise RuntimeError("inner fails")
            except RuntimeError:
                pass
            realtime.publish("s", "outer", 3)

    await sync_to_async(work)()
    first, second = await listener.event(), await listener.event()
    assert [(m["seq"], m["event"]) for m in (first, second)] == [(1, "outer"), (2, "outer")]
    assert json.loads(second["frame"])["data"] == 3
    await listener.assert_silent()
    assert await sync_to_async(stored)("s") == [1, 2]


async def test_ephemeral_is_sent_not_stored(listener):
    await listener.join("cursors")
    event = await realtime.apublish("cursors", "cursor.moved", {"x": 1}, ephemeral=True)
    assert event.seq is None and event.pk is None
    message = await listener.get()
    assert message["seq"] is None
    assert "seq" not in json.loads(message["frame"])
    assert await sync_to_async(stored)("cursors") == []


async def test_types_msgpack_rejects_arrive_as_json_strings(listener):
    """channels-redis serialises with msgpack: only JSON-safe values may reach it."""
    await listener.join("s")
    ident = uuid.uuid4()
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    event = await realtime.apublish("s", "e", {"id": ident, "price": Decimal("1.10"), "at": when})
    assert event.data == {"id": str(ident), "price": "1.10", "at": "2026-01-02T03:04:05.678Z"}
    frame = json.loads((await listener.get())["frame"])
    assert frame["data"] == event.data


@pytest.mark.parametrize(
    ("stream", "event", "data", "error"),
    [
        ("bad name", "e", None, InvalidStream),
        ("s", "", None, InvalidEvent),
        ("s", "has space", None, InvalidEvent),
        ("s", "realtime.subscribed", None, InvalidEvent),
        ("s", "presence.join", None, InvalidEvent),
        ("s", "e", {1, 2}, InvalidEvent),
        ("s", "e", "x" * (64 * 1024), InvalidEvent),
    ],
)
async def test_invalid_publishes_store_nothing(listener, stream, event, data, error):
    await listener.join("s")
    with pytest.raises(error):
        await realtime.apublish(stream, event, data)
    await listener.assert_silent(0.2)
    assert await sync_to_async(Event.objects.count)() == 0


async def test_sync_publish_refuses_to_run_on_the_event_loop():
    with pytest.raises(SyncInAsyncContext, match="apublish"):
        realtime.publish("s", "e")


async def test_reset_tells_subscribers(listener):
    await listener.join("s")
    await realtime.apublish("s", "e")
    await listener.get()
    info = await realtime.areset("s")
    message = await listener.get()
    assert isinstance(message.pop("t"), float)  # fan-out time, for the latency histogram
    assert message == {"type": "realtime.reset", "stream": "s", "epoch": info.epoch, "seq": 0}


async def test_idempotency_key_stores_and_sends_once(listener):
    await listener.join("s")
    first = await realtime.apublish("s", "order.paid", {"n": 1}, idempotency_key="pay-42")
    again = await realtime.apublish("s", "order.paid", {"n": 1}, idempotency_key="pay-42")
    other = await realtime.apublish("s", "order.paid", {"n": 2}, idempotency_key="pay-43")
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate, again.pk) == (1, True, first.pk)
    assert other.seq == 2
    assert [(await listener.get())["seq"] for _ in range(2)] == [1, 2]
    await listener.assert_silent()
    assert await sync_to_async(stored)("s") == [1, 2]
    # Keys belong to a stream: the same key elsewhere is a new event.
    assert (await realtime.apublish("t", "e", idempotency_key="pay-42")).seq == 1
    with pytest.raises(InvalidEvent):
        await realtime.apublish("s", "e", idempotency_key="has space")


async def test_apublish_many_stores_in_order_and_fans_out_in_chunks(listener):
    from realtime.core.publishing import FAN_OUT_CHUNK

    await listener.join("many")
    await realtime.apublish("many", "first", 0)
    count = FAN_OUT_CHUNK + 5
    events = await realtime.apublish_many("many", [("tick", {"n": n}) for n in range(count)])
    assert [e.seq for e in events] == list(range(2, count + 2))
    assert await sync_to_async(stored)("many") == list(range(1, count + 2))
    assert (await listener.get())["seq"] == 1
    chunks = [await listener.get(), await listener.get()]
    assert [m["type"] for m in chunks] == ["realtime.events", "realtime.events"]
    inner = [e for m in chunks for e in m["events"]]
    assert [e["seq"] for e in inner] == list(range(2, count + 2))
    assert [json.loads(e["frame"])["data"]["n"] for e in inner] == list(range(count))
    assert {e["epoch"] for e in inner} == {events[0].stream.epoch}
    await listener.assert_silent()


async def test_publish_many_waits_for_commit_and_rolls_back_whole(listener):
    await listener.join("many")

    def work(fail: bool) -> None:
        with transaction.atomic():
            realtime.publish_many("many", [("a", 1), ("b", 2)])
            if fail:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await sync_to_async(work)(True)
    await listener.assert_silent()
    assert await sync_to_async(stored)("many") == []
    await sync_to_async(work)(False)
    message = await listener.get()
    assert [e["seq"] for e in message["events"]] == [1, 2]
    assert await sync_to_async(stored)("many") == [1, 2]


async def test_publish_group_stores_many_streams_together_after_commit(listener):
    """``publish_group`` (what live-model capture uses): each stream's events in order with
    consecutive seqs, new streams made in one go, sent when the transaction commits."""
    from realtime.core.publishing import publish_group

    await listener.join("g:1")
    await listener.join("g:2")

    def work(fail: bool) -> list[tuple[str, int]]:
        with transaction.atomic():
            rows = publish_group([("g:1", "a", 1), ("g:2", "b", 2), ("g:1", "c", 3)])
            if fail:
                raise RuntimeError("boom")
        return [(row.stream.name, row.seq) for row in rows]

    with pytest.raises(RuntimeError):
        await sync_to_async(work)(True)
    await listener.assert_silent()
    assert await sync_to_async(work)(False) == [("g:1", 1), ("g:2", 1), ("g:1", 2)]
    got = [await listener.event() for _ in range(3)]
    assert sorted((e["stream"], e["seq"], e["event"]) for e in got) == [
        ("g:1", 1, "a"),
        ("g:1", 2, "c"),
        ("g:2", 1, "b"),
    ]
    assert await sync_to_async(stored)("g:1") == [1, 2]
    with pytest.raises(InvalidEvent):
        await sync_to_async(publish_group)([("g:1", "ok", 1), ("g:1", "realtime.x", 2)])
    assert await sync_to_async(stored)("g:1") == [1, 2]


async def test_publish_many_validates_every_event_before_storing_any(listener):
    with pytest.raises(InvalidEvent):
        await realtime.apublish_many("many", [("ok", 1), ("realtime.reserved", 2)])
    with pytest.raises(InvalidStream):
        await realtime.apublish_many("bad stream", [("ok", 1)])
    from realtime.core.publishing import MAX_MANY

    with pytest.raises(InvalidEvent, match="At most"):
        await realtime.apublish_many("many", [("e", n) for n in range(MAX_MANY + 1)])
    assert await realtime.apublish_many("many", []) == []
    assert await sync_to_async(stored)("many") == []


async def test_a_failed_fan_out_is_logged_for_every_kind_of_message(settings, caplog):
    """With the layer unreachable (a real Redis URL nobody listens on), every publish path
    stores, logs the fan-out failure for the reconciler, and returns normally."""
    from tests.servers import free_port

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
        }
    }
    await realtime.apublish("down", "one", 1)
    await realtime.apublish_many("down", [("many", 2), ("many", 3)])
    await realtime.areset("down")
    failures = [r.getMessage() for r in caplog.records if "Fan-out of" in r.getMessage()]
    assert [m.split(" failed")[0] for m in failures] == [
        "Fan-out of down#1",
        "Fan-out of down#2",
        "Fan-out of down#0",
    ]


PUBLISHER = """
import django, os, sys
django.setup()
import realtime
count, fork = int(sys.argv[1]), sys.argv[2] == "fork"
for n in range(count // 2 if fork else count):
    realtime.publish("from-script", "tick", {"n": n})
if fork:  # as a pre-forking server does: the child starts a sender of its own
    from django.db import connections
    connections.close_all()
    if pid := os.fork():
        os._exit(os.waitpid(pid, 0)[1] >> 8)
    for n in range(count // 2, count):
        realtime.publish("from-script", "tick", {"n": n})
# No flush: exiting must send what is queued (the sender's atexit hook).
"""


@pytest.mark.parametrize("fork", ["no-fork", "fork"])
async def test_a_script_that_publishes_and_exits_delivers_everything(listener, fork):
    """A management command or worker: sync ``publish()`` with no event loop in the process.
    Every event reaches the layer, in order, though the process exits right after the last."""
    import subprocess
    import sys

    from django.conf import settings

    from tests.servers import server_env

    await listener.join("from-script")
    count = 300
    script = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, str(count), fork,
        env=server_env(), cwd=settings.BASE_DIR, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # Read while it publishes: a layer channel holds only so many messages.
        seqs = [(await listener.event(timeout=30))["seq"] for _ in range(count)]
        async with asyncio.timeout(30):
            _, stderr = await script.communicate()
    finally:
        if script.returncode is None:
            script.kill()
    assert script.returncode == 0, stderr.decode()
    assert seqs == list(range(1, count + 1))
    await listener.assert_silent()


def test_the_sender_joins_queued_events_of_a_stream():
    from realtime.bus.sender import FAN_OUT_CHUNK, merge

    def event(stream: str, seq: int | None) -> tuple[str, dict]:
        return stream, {"type": "realtime.event", "stream": stream, "seq": seq, "t": 1.0}

    queued = [event("a", 1), event("a", 2), event("b", 1), event("a", 3), event("a", None)]
    queued += [event("c", n) for n in range(1, FAN_OUT_CHUNK + 3)]
    merged = merge(queued)
    shape = [(g, m["type"], [e["seq"] for e in m.get("events", [m])]) for g, m in merged]
    assert shape[:4] == [
        ("a", "realtime.events", [1, 2]),
        ("b", "realtime.event", [1]),
        ("a", "realtime.event", [3]),
        ("a", "realtime.event", [None]),  # ephemeral: never joined, it has no seq
    ]
    assert shape[4:] == [
        ("c", "realtime.events", list(range(1, FAN_OUT_CHUNK + 1))),
        ("c", "realtime.events", [FAN_OUT_CHUNK + 1, FAN_OUT_CHUNK + 2]),
    ]


def test_the_sender_spaces_its_sends_while_messages_keep_coming(monkeypatch):
    """Sync publishers one after another: each send starts at least ``SEND_HOLD`` after the
    one before (what arrived meanwhile leaves with it), so a busy process pays one send per
    few events, not one per event. Each message here is sent alone before the next is queued
    (``flush``), so without pacing the sends would follow each other at once."""
    from realtime.bus import messages
    from realtime.bus import sender as sender_module

    started: list[float] = []
    real = sender_module.group_send_many

    async def recording(items):
        started.append(time.monotonic())
        await real(items)

    monkeypatch.setattr(sender_module, "group_send_many", recording)
    for n in range(10):
        sender_module.send(messages.event("paced", "e0", n + 1, "tick", "{}"))
        assert sender_module.flush(5)
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert len(started) == 10
    assert min(gaps) >= sender_module.SEND_HOLD * 0.99, gaps


def test_what_comes_during_the_senders_hold_needs_no_wake_up(monkeypatch):
    """A message submitted while the sender holds (paced) is read when the hold ends: no
    write to the loop's self-pipe and thread switch for it, as a ``publish()`` loop would
    otherwise pay once per send. A message after a quiet spell still wakes it at once."""
    from realtime.bus import messages
    from realtime.bus import sender as sender_module

    monkeypatch.setattr(sender_module, "SEND_HOLD", 0.2)
    sent: list[tuple[float, list]] = []
    real = sender_module.group_send_many

    async def recording(items):
        sent.append((time.monotonic(), [e["seq"] for _, m in items for e in m.get("events", [m])]))
        await real(items)

    monkeypatch.setattr(sender_module, "group_send_many", recording)
    own = sender_module.Sender()  # its own thread and loop, paced by the 0.2 s hold
    own.submit("held", messages.event("held", "e0", 1, "tick", "{}"))
    assert own._loop is not None
    wakes: list[object] = []
    schedule = own._loop.call_soon_threadsafe

    def counting(*args):  # type: ignore[no-untyped-def]
        wakes.append(args)
        return schedule(*args)

    monkeypatch.setattr(own._loop, "call_soon_threadsafe", counting)
    deadline = time.monotonic() + 5
    while not own._holding and time.monotonic() < deadline:
        time.sleep(0.001)
    assert own._holding, "the sender never held after its first send"
    began = time.monotonic()
    own.submit("held", messages.event("held", "e0", 2, "tick", "{}"))
    own.submit("held", messages.event("held", "e0", 3, "tick", "{}"))
    assert own.flush(5)
    assert wakes == []
    assert [seqs for _, seqs in sent] == [[1], [2, 3]]  # one send, when the hold ended
    assert sent[1][0] - began < 0.2 + 0.1
    time.sleep(0.25)  # quiet for longer than the hold: the next message wakes the sender
    own.submit("held", messages.event("held", "e0", 4, "tick", "{}"))
    assert own.flush(5) and len(wakes) == 1 and [seqs for _, seqs in sent][2] == [4]


async def test_concurrent_apublishes_are_group_committed(listener):
    """Outside a caller's transaction, concurrent ``apublish`` calls share one transaction and
    one layer message per stream, and each caller learns its own seq."""
    await listener.join("g", "h")
    events = await asyncio.gather(
        *(realtime.apublish("g" if n % 2 else "h", "tick", {"n": n}) for n in range(60))
    )
    assert sorted(e.seq for e in events if e.stream.name == "g") == list(range(1, 31))
    # Each stream's seqs follow the order of the calls.
    for name in ("g", "h"):
        mine = [e for e in events if e.stream.name == name]
        assert [e.seq for e in mine] == list(range(1, 31))
    messages = []
    while len([e for m in messages for e in flatten(m)]) < 60:
        messages.append(await listener.get())
    # One layer message per group for this channel, however many streams: a realtime.batch of
    # the streams' realtime.events messages.
    assert len(messages) < 60 and {m["type"] for m in messages} == {"realtime.batch"}
    for name in ("g", "h"):
        received = [e for m in messages for e in flatten(m) if e["stream"] == name]
        assert [e["seq"] for e in received] == list(range(1, 31))
    await listener.assert_silent()
    assert await sync_to_async(stored)("g") == list(range(1, 31))


async def test_a_failing_publish_in_a_group_fails_alone(listener):
    """A publish the database refuses (here a stream whose next seq is already taken, as a
    bad restore would leave it) fails its own caller; the rest of its group is stored."""
    from realtime.models import Stream

    def corrupt() -> None:
        stream = Stream.objects.create(name="broken")
        Event.objects.create(stream=stream, seq=1, event="left-over")

    await sync_to_async(corrupt)()
    await listener.join("fine")
    results = await asyncio.gather(
        *(realtime.apublish(name, "e", n) for n, name in enumerate(["fine", "broken", "fine"])),
        return_exceptions=True,
    )
    assert [r.seq for r in (results[0], results[2])] == [1, 2]
    assert isinstance(results[1], Exception) and not isinstance(results[1], Event)
    assert await sync_to_async(stored)("fine") == [1, 2]
    assert await sync_to_async(stored)("broken") == [1]
    assert [(await listener.event())["seq"] for _ in range(2)] == [1, 2]


async def test_apublish_from_sync_code_joins_its_transaction(listener):
    await listener.join("s")
    from asgiref.sync import async_to_sync

    def work(fail: bool) -> None:
        with transaction.atomic():
            async_to_sync(realtime.apublish)("s", "e", 1)
            asyncio.run_coroutine_threadsafe(listener.assert_silent(0.3), loop).result(5)
            if fail:
                raise RuntimeError("boom")

    loop = asyncio.get_running_loop()
    with pytest.raises(RuntimeError):
        await sync_to_async(work)(True)
    assert await sync_to_async(stored)("s") == []
    await sync_to_async(work)(False)
    assert (await listener.event())["seq"] == 1
    assert await sync_to_async(stored)("s") == [1]
