"""What a client can make the server keep is bounded (issue 12).

Subscribing to, joining and leaving the presence of a stream nobody published to writes no
row that outlives the connection; the positions a subscriber got before the first publish
stay exact afterwards; pruning removes empty streams and old presence history; the hub's
per-stream and per-outage memory has a bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

import realtime
from realtime.core.hub import Hub
from realtime.core.presence_tracking import DEPARTED_TTL, StreamPresence
from realtime.core.reporting import MAX_CHANGES
from realtime.models import (
    Connection,
    Event,
    Presence,
    PresenceMember,
    PresenceSession,
    Stream,
)
from realtime.storage import cleanup, epochs, presence, registry, store
from tests.servers import WSClient

WS = "/realtime/ws/"


def counts() -> dict[str, int]:
    return {
        "streams": Stream.objects.count(),
        "members": PresenceMember.objects.count(),
        "metas": Presence.objects.count(),
        "sessions": PresenceSession.objects.count(),
        "connections": Connection.objects.count(),
    }


@pytest.fixture
def server(daphne_server):
    return daphne_server(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "REALTIME_TEST_OVERRIDES": json.dumps({"PRESENCE_GRACE": 0, "RECONCILE_INTERVAL": 0.5}),
        }
    )


async def open_ws(server: Any, client_id: str = "tab") -> WSClient:
    ws = await WSClient(f"{server.ws_url}{WS}?client_id={client_id}").connect()
    await ws.recv_until(lambda f: f["type"] == "welcome")
    return ws


async def settled(expected: dict[str, int], timeout: float = 10) -> dict[str, int]:
    """Row counts once they equal ``expected`` (cleanup after a close is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        now = await sync_to_async(counts)()
        if now == expected or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


# --- never-published streams ----------------------------------------------------------------
async def test_churn_on_never_published_streams_leaves_no_rows(server):
    """The report's reproduction: subscribe, join, leave, unsubscribe, on fresh names."""
    ws = await open_ws(server)
    for n in range(30):
        stream = f"public:fresh-{n}"
        await ws.send_json({"type": "subscribe", "id": n, "stream": stream, "presence": {}})
        await ws.recv_until(lambda f: f["type"] == "presence.state")
        await ws.send_json({"type": "presence", "id": n, "stream": stream, "leave": True})
        await ws.send_json({"type": "unsubscribe", "id": n, "stream": stream})
        await ws.recv_until(lambda f: f["type"] == "unsubscribed")
    # While the connection is open, only the connection itself is recorded...
    assert await settled({**counts_zero(), "connections": 1}) == {**counts_zero(), "connections": 1}
    await ws.close()
    # ... and once it closed, nothing at all.
    assert await settled(counts_zero()) == counts_zero()


def counts_zero() -> dict[str, int]:
    return {"streams": 0, "members": 0, "metas": 0, "sessions": 0, "connections": 0}


async def test_subscribed_before_the_first_publish_resumes_exactly(server):
    stream = "public:later"
    early = await open_ws(server, "early")
    before = epochs.creation_epoch(stream)
    await early.send_json({"type": "subscribe", "id": "s", "stream": stream, "since": 0})
    first = await early.recv_until(lambda f: f["type"] == "subscribed")
    assert first["seq"] == 0 and first["recovered"] is True
    assert first["epoch"] in {before, epochs.creation_epoch(stream)}  # an hour may turn
    await early.close()
    assert not await sync_to_async(Stream.objects.filter(name=stream).exists)()

    for n in range(3):
        await sync_to_async(realtime.publish)(stream, "e", n)
    again = await open_ws(server, "early")
    await again.send_json(
        {"type": "subscribe", "id": "s", "stream": stream, "since": 0, "epoch": first["epoch"]}
    )
    frame = await again.recv_until(lambda f: f["type"] == "subscribed")
    assert frame["recovered"] is True and frame["seq"] == 3
    seqs = [(await again.recv_until(lambda f: f["type"] == "event"))["seq"] for _ in range(3)]
    assert seqs == [1, 2, 3]
    await again.close()


async def test_live_subscriber_of_a_new_stream_gets_every_event_once(server):
    stream = "public:born"
    ws = await open_ws(server)
    await ws.send_json({"type": "subscribe", "id": "s", "stream": stream, "since": 0})
    await ws.recv_until(lambda f: f["type"] == "subscribed")
    for n in range(5):
        await sync_to_async(realtime.publish)(stream, "e", n)
    events = [await ws.recv_until(lambda f: f["type"] == "event") for _ in range(5)]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    # Only if an hour turned between subscribing and publishing: the row's epoch, recovered.
    assert all(f["recovered"] for f in ws.skipped if f["type"] == "subscribed")
    await asyncio.sleep(0.7)  # a reconcile round: nothing more comes
    await ws.send_json({"type": "ping", "id": "p"})
    await ws.recv_until(lambda f: f["type"] == "pong")
    assert [f["seq"] for f in ws.received if f["type"] == "event"] == [1, 2, 3, 4, 5]
    await ws.close()


@pytest.mark.parametrize("carried", [True, False], ids=["next-hour", "reset-epoch"])
async def test_live_subscriber_takes_the_epoch_the_stream_was_stored_under(server, carried):
    """The first publish came an hour later (or the stream was created by a reset): the
    subscriber gets the row's epoch in a new ``subscribed``, then every event once."""
    stream = f"public:turn-{carried}"
    ws = await open_ws(server)
    await ws.send_json({"type": "subscribe", "id": "s", "stream": stream, "since": 0})
    told = (await ws.recv_until(lambda f: f["type"] == "subscribed"))["epoch"]
    stored = epochs.creation_epoch(stream, time.time() + 3600) if carried else epochs.new_epoch()
    await sync_to_async(Stream.objects.create)(name=stream, epoch=stored)
    for n in range(3):
        await sync_to_async(realtime.publish)(stream, "e", n)
    again = await ws.recv_until(lambda f: f["type"] == "subscribed")
    assert again["epoch"] == stored != told
    assert again["recovered"] is carried
    events = [await ws.recv_until(lambda f: f["type"] == "event") for _ in range(3)]
    assert [e["seq"] for e in events] == [1, 2, 3]
    await asyncio.sleep(0.7)  # a reconcile round: nothing more comes
    await ws.send_json({"type": "ping", "id": "p"})
    await ws.recv_until(lambda f: f["type"] == "pong")
    assert [f["seq"] for f in ws.received if f["type"] == "event"] == [1, 2, 3]
    await ws.close()


async def test_a_position_from_the_hour_before_carries_over(server):
    """The stream was created in a later hour than the subscriber was told: still exact."""
    stream = "public:hours"
    told = epochs.creation_epoch(stream, time.time() - 3600)
    await sync_to_async(realtime.publish)(stream, "e", 1)
    ws = await open_ws(server)
    await ws.send_json(
        {"type": "subscribe", "id": "s", "stream": stream, "since": 0, "epoch": told}
    )
    frame = await ws.recv_until(lambda f: f["type"] == "subscribed")
    assert frame["recovered"] is True and frame["epoch"] == epochs.creation_epoch(stream)
    assert (await ws.recv_until(lambda f: f["type"] == "event"))["seq"] == 1
    await ws.close()


@pytest.mark.parametrize(
    "held",
    [
        pytest.param(lambda s: epochs.creation_epoch(s, time.time() - 30 * 3600), id="too-old"),
        pytest.param(lambda s: epochs.creation_epoch("public:other"), id="other-stream"),
        pytest.param(lambda s: epochs.new_epoch(), id="random"),
    ],
)
def test_other_epochs_do_not_carry_over(held):
    stream = "public:x"
    current = epochs.creation_epoch(stream)
    assert epochs.carries_over(stream, current, 5, current, 0)
    assert not epochs.carries_over(stream, held(stream), 0, current, 0)
    # A seq beyond 0, or history already trimmed, never carries over to another epoch.
    before = epochs.creation_epoch(stream, time.time() - 3600)
    assert epochs.carries_over(stream, before, 0, current, 0)
    assert not epochs.carries_over(stream, before, 1, current, 0)
    assert not epochs.carries_over(stream, before, 0, current, 4)


# --- pruning ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_prune_removes_empty_streams_but_not_young_or_subscribed_ones():
    realtime.publish("old", "e", 1)
    realtime.publish("young", "e", 1)
    realtime.publish("watched", "e", 1)
    realtime.publish("full", "e", 1)
    store.reset("blank")  # a row with no history at all
    Event.objects.exclude(stream__name="full").delete()
    Stream.objects.exclude(name="full").update(trimmed_seq=1)
    Stream.objects.filter(name="blank").update(trimmed_seq=0)
    long_ago = timezone.now() - epochs.EMPTY_STREAM_MIN_AGE - timedelta(minutes=1)
    Stream.objects.filter(name__in=["old", "watched"]).update(created_at=long_ago)
    assert store.prune_streams({"watched"}) == 2
    assert sorted(Stream.objects.values_list("name", flat=True)) == ["full", "watched", "young"]
    # Published to again, the removed stream is a new history: an old position is not exact.
    held = epochs.creation_epoch("old", long_ago.timestamp())
    assert realtime.publish("old", "e", 2).seq == 1
    info = store.stream_info("old")
    assert info is not None and not epochs.carries_over("old", held, 1, info.epoch, 0)


@pytest.mark.django_db
def test_prune_keeps_presence_history_for_its_retention():
    user = get_user_model().objects.create_user("ada")
    now = timezone.now()
    ended = [now - timedelta(days=40), now - timedelta(days=2), None]
    for end in ended:
        PresenceSession.objects.create(stream="room", key=str(user.pk), user=user, ended_at=end)
    PresenceSession.objects.create(stream="room", key="anon:x", started_at=now, ended_at=now)
    with override_settings(REALTIME={"PRESENCE_HISTORY_RETENTION": timedelta(days=30)}):
        assert presence.prune_history() == 2  # the 40-day-old one, and the anonymous one
    assert sorted(PresenceSession.objects.values_list("ended_at", flat=True), key=str) == sorted(
        ended[1:], key=str
    )
    with override_settings(REALTIME={"PRESENCE_HISTORY_RETENTION": None}):
        assert presence.prune_history() == 0


@pytest.mark.django_db
def test_realtime_prune_reports_each_kind():
    store.reset("blank")
    out = StringIO()
    call_command("realtime_prune", stdout=out)
    assert "1 empty stream(s)" in out.getvalue()
    assert "Presence sessions: kept 30 days after they end, signed-in only." in out.getvalue()
    assert cleanup.prune() == {"events": 0, "streams": 0, "presence_sessions": 0, "tickets": 0}


@pytest.mark.django_db
def test_presence_rows_live_while_present_and_versions_keep_growing():
    registry.register_server("srv", "channel")
    message, _ = presence.join("room", "anon:a", None, "c1", "srv", {})
    first = message["version"]
    (left,) = presence.leave("c1")
    assert left["kind"] == "leave" and left["version"] > first
    assert not PresenceMember.objects.exists() and not PresenceSession.objects.exists()
    again, _ = presence.join("room", "anon:a", None, "c2", "srv", {})
    assert again["kind"] == "join" and again["version"] > left["version"]


# --- memory -------------------------------------------------------------------------------
def test_departed_members_are_forgotten_after_the_ttl():
    state = StreamPresence()
    assert state.saw("a", 5, False, now=0)
    assert not state.saw("a", 4, False, now=1)  # late and older: dropped
    assert state.saw("a", 6, True, now=2)  # left
    assert not state.saw("a", 5, False, now=3)  # a late update of before the leave
    for key in range(1000):
        state.saw(f"churn{key}", 1, False, now=3)
        state.saw(f"churn{key}", 2, True, now=3)
    state.forget_departed(now=3 + DEPARTED_TTL + 1)
    assert state.versions == {} and state.departed == {}


async def test_connection_changes_are_bounded_while_they_cannot_be_sent():
    hub = Hub()
    for n in range(MAX_CHANGES * 3):
        hub.reporter.connection_opened(f"c{n}")
    assert len(hub.reporter.opened) == MAX_CHANGES and hub.reporter.changes_lost
