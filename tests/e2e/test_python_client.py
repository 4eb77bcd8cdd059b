"""``realtime.client`` end to end, against real daphne processes (docs/python-client.md).

Events are published from this process (``realtime.apublish``), which shares the test
database and the Redis channel layer with the servers, or by the client itself where the
stream's rules let clients publish (``public:chat:*`` in the demo's settings).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

import realtime
from realtime.client import (
    Backoff,
    Client,
    ClientClosed,
    ClientError,
    ConnectionRefused,
    Event,
    RequestError,
    Reset,
    StateChange,
)
from realtime.models import Event as StoredEvent
from tests.servers import Server, TCPProxy, settings_env

pytestmark = pytest.mark.django_db(transaction=True)

ServerFactory = Callable[..., Server]


async def take(sub: Any, count: int, timeout: float = 10) -> list[Any]:
    items = []
    async with asyncio.timeout(timeout):
        while len(items) < count:
            items.append(await anext(sub))
    return items


async def test_subscribe_and_receive(daphne_server: ServerFactory) -> None:
    server = daphne_server()
    before = asyncio.all_tasks()
    async with Client(server.http_url) as client:
        assert client.state == "open" and client.transport == "websocket"
        sub = await client.subscribe("public:py:one")
        for n in range(3):
            await realtime.apublish("public:py:one", "tick", {"n": n})
        items = await take(sub, 3)
        assert [(e.seq, e.event, e.data) for e in items] == [
            (1, "tick", {"n": 0}),
            (2, "tick", {"n": 1}),
            (3, "tick", {"n": 2}),
        ]
        assert sub.position == (sub.epoch, 3)
        assert len(asyncio.all_tasks() - before) >= 2  # the connection and its ticker
    await asyncio.sleep(0)  # let the websockets library's own tasks see the close
    assert asyncio.all_tasks() - before == set(), "close() left tasks behind"


# --- helpers ------------------------------------------------------------------------------

FAST = Backoff(base=0.1, cap=0.5)


class States:
    """Records a client's state changes with the time each happened."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, StateChange]] = []

    def __call__(self, change: StateChange) -> None:
        self.changes.append((time.monotonic(), change))

    def of(self, state: str) -> list[StateChange]:
        return [change for _, change in self.changes if change.state == state]


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


def stored(stream: str) -> list[tuple[int, str | None]]:
    return list(
        StoredEvent.objects.filter(stream__name=stream)
        .order_by("seq")
        .values_list("seq", "idempotency_key")
    )


# --- subscribing, publishing ---------------------------------------------------------------


async def test_callbacks_history_and_publishing_from_the_client(
    daphne_server: ServerFactory,
) -> None:
    server = daphne_server()
    stream = "public:chat:py-callbacks"
    for n in range(2):
        await realtime.apublish(stream, "old", {"n": n})
    got: list[Event] = []
    async with Client(server.ws_url) as client:  # a ws:// URL works as well
        sub = await client.subscribe(stream, since=0, on_event=got.append)
        first = await sub.publish("message.created", {"text": "hi"})
        second = await client.publish(stream, "message.created", {"text": "again"}, key="k-2")
        assert (first.seq, first.duplicate) == (3, False)
        assert (second.seq, second.duplicate, second.key) == (4, False, "k-2")
        await eventually(lambda: len(got) == 4, 5, "four events")
        assert [(e.seq, e.event) for e in got] == [
            (1, "old"), (2, "old"), (3, "message.created"), (4, "message.created"),
        ]  # fmt: skip
        again = await client.publish(stream, "message.created", {"text": "again"}, key="k-2")
        assert (again.seq, again.duplicate) == (4, True)
        ephemeral = await client.publish(stream, "typing", {"who": "py"}, ephemeral=True)
        assert ephemeral.seq is None
        await eventually(lambda: len(got) == 5, 5, "the ephemeral event")
        assert got[-1].ephemeral and got[-1].event == "typing"
        await sub.unsubscribe()
        assert sub.state == "closed" and stream not in client.subscriptions
    assert client.state == "closed"
    assert len(await sync_to_async(stored)(stream)) == 4


async def test_resume_across_a_server_restart_misses_and_repeats_nothing(
    daphne_server: ServerFactory,
) -> None:
    """The server is killed while events are published; restarted on its port, the client
    resumes from its last seq: every event once, in order."""
    server = daphne_server()
    stream = "public:py:restart"
    states = States()
    async with Client(server.http_url, backoff=FAST, on_state=states) as client:
        sub = await client.subscribe(stream, since=0)
        for n in range(5):
            await realtime.apublish(stream, "tick", {"n": n})
        seen = [item.seq for item in await take(sub, 5)]
        server.kill()
        for n in range(5, 12):
            await realtime.apublish(stream, "tick", {"n": n})  # stored while it is down
        daphne_server(port=server.port)
        for n in range(12, 15):
            await realtime.apublish(stream, "tick", {"n": n})
        seen += [item.seq for item in await take(sub, 10, timeout=20)]
        assert seen == list(range(1, 16))
        assert sub.duplicates == 0
        assert states.of("reconnecting"), "the client never saw the server go"
        # Nothing more is pending: no duplicate arrives late.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await anext(sub)


async def test_a_dropped_connection_resumes_while_publishing_goes_on(
    daphne_server: ServerFactory,
) -> None:
    server = daphne_server()
    stream = "public:py:drop"
    done = asyncio.Event()

    async def publisher() -> None:
        for n in range(60):
            await realtime.apublish(stream, "tick", {"n": n})
            await asyncio.sleep(0.005)
        done.set()

    async with Client(server.http_url, backoff=FAST) as client:
        sub = await client.subscribe(stream, since=0)
        task = asyncio.create_task(publisher())
        seqs: list[int | None] = []
        drops = 0
        async with asyncio.timeout(20):
            while len(seqs) < 60:
                item = await anext(sub)
                assert isinstance(item, Event)
                seqs.append(item.seq)
                if len(seqs) % 15 == 0 and drops < 3:
                    drops += 1
                    await client.drop()
        await task
        assert seqs == list(range(1, 61))


async def test_an_epoch_change_is_a_reset_in_the_order_of_events(
    daphne_server: ServerFactory,
) -> None:
    server = daphne_server()
    stream = "public:py:epoch"
    resets: list[Reset] = []
    async with Client(server.http_url) as client:
        sub = await client.subscribe(stream, since=0, on_reset=resets.append)
        for n in range(3):
            await realtime.apublish(stream, "tick", {"n": n})
        await take(sub, 3)
        old_epoch = sub.epoch
        await realtime.areset(stream)
        await realtime.apublish(stream, "tick", {"n": "new"})
        reset, event = await take(sub, 2)
        assert isinstance(reset, Reset) and reset.epoch != old_epoch and resets == [reset]
        assert isinstance(event, Event) and (event.seq, event.data) == (1, {"n": "new"})
        assert sub.position == (reset.epoch, 1)

        # A position from the old epoch, given to a new subscription: a Reset first, then
        # the retained history of the new epoch.
        async with Client(server.http_url) as other:
            stale = await other.subscribe(stream, since=3, epoch=old_epoch)
            assert stale.recovered is False
            reset, event = await take(stale, 2)
            assert isinstance(reset, Reset) and reset.epoch == sub.epoch
            assert isinstance(event, Event) and event.seq == 1


async def test_a_publish_whose_ack_was_lost_is_stored_once(daphne_server: ServerFactory) -> None:
    """The server stores the publish but its ack never reaches the client (the proxy drops
    it, then cuts the connection): the client sends it again after reconnecting, with the
    same idempotency key, and the server answers with the first event's seq."""
    server = daphne_server()
    stream = "public:chat:py-ack"
    proxy = TCPProxy([server.port])
    url = await proxy.start()
    try:
        async with Client(url, backoff=FAST) as client:
            proxy.hold = True
            publishing = asyncio.create_task(client.publish(stream, "message.created", {"n": 1}))
            async with asyncio.timeout(5):
                while not await sync_to_async(stored)(stream):
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            assert not publishing.done(), "the ack was not held back"
            proxy.hold = False
            proxy.cut()
            result = await asyncio.wait_for(publishing, 10)
            assert (result.seq, result.duplicate) == (1, True)
            rows = await sync_to_async(stored)(stream)
            assert rows == [(1, result.key)]
    finally:
        await proxy.close()


async def test_publishes_made_while_disconnected_wait_and_go_out_in_order(
    daphne_server: ServerFactory,
) -> None:
    server = daphne_server()
    stream = "public:chat:py-queue"
    async with Client(server.http_url, backoff=Backoff(base=1.0, cap=1.0)) as client:
        server.kill()
        await eventually(lambda: client.state == "reconnecting", 5, "the client noticed")
        pending = [
            asyncio.create_task(client.publish(stream, "message.created", {"n": n}))
            for n in range(3)
        ]
        with pytest.raises(ClientError) as ephemeral:
            await client.publish(stream, "typing", ephemeral=True)
        assert ephemeral.value.code == "disconnected"
        daphne_server(port=server.port)
        results = await asyncio.wait_for(asyncio.gather(*pending), 15)
        assert [r.seq for r in results] == [1, 2, 3]
    assert [key for _, key in await sync_to_async(stored)(stream)] == [r.key for r in results]


# --- presence ------------------------------------------------------------------------------


async def test_presence_join_list_leave_and_rejoin_after_a_drop(
    daphne_server: ServerFactory,
) -> None:
    server = daphne_server()
    stream = "public:py:room"
    frames: list[dict[str, Any]] = []
    async with (
        Client(server.http_url, client_id="py-ada") as ada,
        Client(server.http_url, client_id="py-bob", backoff=FAST) as bob,
    ):
        room = await ada.subscribe(stream, presence={"name": "Ada"}, on_presence=frames.append)
        await eventually(lambda: room.presence.ref is not None, 5, "Ada's presence.state")
        assert set(room.presence.members) == {"anon:py-ada"}
        bobs = await bob.subscribe(stream)
        ref = await bobs.presence.join({"name": "Bob"})
        assert ref and bobs.presence.ref == ref
        await eventually(lambda: "anon:py-bob" in room.presence.members, 5, "Bob seen joining")
        assert set(bobs.presence.members) == {"anon:py-ada", "anon:py-bob"}
        assert room.presence.members["anon:py-bob"][0]["meta"] == {"name": "Bob"}

        await bobs.presence.update({"name": "Bob", "typing": True})
        await eventually(
            lambda: room.presence.members["anon:py-bob"][0]["meta"].get("typing") is True,
            5,
            "Bob's update",
        )
        # Bob's connection drops: he rejoins on the reconnect, within the grace period, so
        # Ada never sees him leave.
        frames.clear()
        await bob.drop()
        await eventually(
            lambda: bob.state == "open" and bobs.presence.ref not in (None, ref), 10, "rejoined"
        )
        await asyncio.sleep(0.5)
        assert "presence.leave" not in [f["type"] for f in frames]
        assert "anon:py-bob" in room.presence.members

        await bobs.presence.leave()
        await eventually(lambda: "anon:py-bob" not in room.presence.members, 5, "Bob left")
        assert frames[-1]["type"] == "presence.leave"


# --- flow control --------------------------------------------------------------------------

WINDOW = {"OUTBOX_WINDOW": {"messages": 40, "bytes": 1 << 20}}


async def test_acknowledgements_keep_a_small_window_open(daphne_server: ServerFactory) -> None:
    """300 events through a window of 40 frames: the client acknowledges as it goes (every
    frame of a batch counted), so the server never cuts it as slow. Paced in chunks of ten
    (each chunk one channel-layer message, so batches arrive): frames queued for one write
    count toward the window at once, so 40 within one FLUSH_INTERVAL would fill it whatever
    the client does (tests/e2e/test_browser.py does the same)."""
    server = daphne_server(settings_env({**WINDOW, "SLOW_CONSUMERS": {"*": "disconnect"}}))
    stream = "public:py:window"
    states = States()
    async with Client(server.http_url, on_state=states) as client:
        sub = await client.subscribe(stream)
        for chunk in range(30):
            await realtime.apublish_many(
                stream, [("tick", {"n": n}) for n in range(chunk * 10, chunk * 10 + 10)]
            )
            await asyncio.sleep(0.02)
        seqs = [item.seq for item in await take(sub, 300, timeout=20)]
        assert seqs == list(range(1, 301))
        assert [c.state for _, c in states.changes] == ["connecting", "open"], [
            (c.state, c.code, c.reason) for _, c in states.changes
        ]


async def test_a_slow_consumer_is_cut_and_resumes_without_loss(
    daphne_server: ServerFactory,
) -> None:
    """The application reads slowly and the client's buffer is small: the client stops
    reading, the server's window fills and it cuts the connection; the client resumes from
    the last event it handed over. Every event arrives once, in order."""
    server = daphne_server(settings_env(WINDOW))
    stream = "public:py:slow"
    states = States()
    async with Client(server.http_url, on_state=states, backoff=FAST) as client:
        sub = await client.subscribe(stream, buffer=2)
        await realtime.apublish_many(stream, [("tick", {"n": n}) for n in range(200)])
        seqs = []
        async with asyncio.timeout(30):
            while len(seqs) < 200:
                item = await anext(sub)
                seqs.append(item.seq)
                if len(seqs) < 60:
                    await asyncio.sleep(0.03)
        assert seqs == list(range(1, 201))
        cuts = states.of("reconnecting")
        assert cuts, "the server never cut the slow consumer"
        assert {c.code for c in cuts} <= {4409, 1006}


# --- draining servers ----------------------------------------------------------------------

SPREAD = 2.0


async def test_a_draining_servers_reconnect_delays_are_honoured(
    daphne_server: ServerFactory,
) -> None:
    """SIGTERM to ``python -m realtime.serve``: each client waits the delay its 1012 close
    carries (spread over DRAIN_SPREAD), then reconnects to the other server and resumes."""
    overrides = {"DRAIN_SPREAD": SPREAD, "DRAIN_TIMEOUT": 4}
    drained = daphne_server(settings_env(overrides), server="realtime")
    other = daphne_server()
    stream = "public:py:drain"
    recorders = [States() for _ in range(8)]
    clients = [Client([drained.http_url, other.http_url], on_state=r) for r in recorders]
    try:
        subs = []
        for client in clients:
            await client.connect()
            subs.append(await client.subscribe(stream, since=0))
        await realtime.apublish(stream, "tick", {"n": 0})
        drained._signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        for n in range(1, 4):
            await realtime.apublish(stream, "tick", {"n": n})
        for sub in subs:
            assert [item.seq for item in await take(sub, 4, timeout=15)] == [1, 2, 3, 4]
        delays, waited = [], []
        for recorder, client in zip(recorders, clients, strict=True):
            ((closed_at, cut),) = [(t, c) for t, c in recorder.changes if c.state == "reconnecting"]
            assert cut.code == 1012 and cut.delay is not None
            assert 0 <= cut.delay <= SPREAD
            opened_at, opened = next(
                (t, c) for t, c in recorder.changes if t > closed_at and c.state == "open"
            )
            assert opened.url == other.http_url and client.url == other.http_url
            delays.append(cut.delay)
            waited.append(opened_at - closed_at)
        for delay, wait in zip(delays, waited, strict=True):
            assert delay - 0.02 <= wait <= delay + 1.5, (delays, waited)
        assert max(delays) - min(delays) > SPREAD / 4, f"reconnects not spread: {delays}"
        # Drawn per connection, uniformly: two of eight may coincide at the close reason's
        # millisecond (about 1 run in 70, seen in CI), half of them cannot by chance.
        assert len(set(delays)) > len(delays) // 2, delays
    finally:
        for client in clients:
            await client.close()


# --- bad input and refusals ----------------------------------------------------------------


async def test_refused_requests_raise_the_protocols_error_codes(
    daphne_server: ServerFactory,
) -> None:
    server = daphne_server()
    async with Client(server.http_url) as client:
        with pytest.raises(RequestError) as bad_name:
            await client.subscribe("no spaces allowed")
        assert bad_name.value.code == "invalid_stream"
        with pytest.raises(RequestError) as private:
            await client.subscribe("private:secret")
        assert private.value.code == "forbidden" and private.value.stream == "private:secret"
        assert "private:secret" not in client.subscriptions
        with pytest.raises(RequestError) as read_only:
            await client.publish("public:py:readonly", "message.created", {})
        assert read_only.value.code == "forbidden"
        with pytest.raises(RequestError) as reserved:
            await client.publish("public:chat:py", "realtime.fake", {})
        assert reserved.value.code == "invalid_event"
        # Refused before sending: the server would cut the connection (1009) every time.
        with pytest.raises(ClientError) as large:
            await client.publish("public:chat:py", "big", "x" * 70_000)
        assert large.value.code == "frame_too_large"
        with pytest.raises(ClientError) as bad_key:
            await client.publish("public:chat:py", "m", key="no spaces")
        assert bad_key.value.code == "invalid_event"
        with pytest.raises(ClientError) as twice:
            sub = await client.subscribe("public:py:twice")
            await client.subscribe("public:py:twice")
        assert twice.value.code == "already_subscribed"
        # The connection is still good.
        await realtime.apublish("public:py:twice", "tick")
        assert (await take(sub, 1))[0].seq == 1
    with pytest.raises(ClientClosed):
        await client.publish("public:chat:py", "m")


async def test_tokens_and_tickets_sign_the_client_in(daphne_server: ServerFactory) -> None:
    """A signed-in client's presence key is its user's pk (anonymous ones are ``anon:``);
    a ticket works once, so the ticket function is called again for each attempt."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from realtime.tickets import issue

    server = daphne_server()
    ada = await sync_to_async(User.objects.create_user)("py-ada")
    bob = await sync_to_async(User.objects.create_user)("py-bob")
    token = await sync_to_async(Token.objects.create)(user=ada)
    tickets: list[str] = []

    async def ticket() -> str:
        tickets.append(await sync_to_async(issue)(bob))
        return tickets[-1]

    stream = "public:py:signed-in"

    async def check(transport: Any) -> None:
        async with (
            Client(server.http_url, token=token.key, transport=transport) as by_token,
            Client(server.http_url, ticket=ticket, transport=transport, backoff=FAST) as by_ticket,
        ):
            first = await by_token.subscribe(stream, presence={})
            second = await by_ticket.subscribe(stream, presence={})
            both = {str(ada.pk), str(bob.pk)}
            await eventually(lambda: set(first.presence.members) == both, 5, "both present")
            issued = len(tickets)
            await by_ticket.drop()
            await eventually(lambda: len(tickets) > issued, 10, "a new ticket for the reconnect")
            await eventually(lambda: by_ticket.state == "open", 10, "open again")
            await eventually(lambda: set(second.presence.members) == both, 5, "rejoined")

    await check("websocket")
    await check("sse")
    assert len(tickets) >= 4 and len(set(tickets)) == len(tickets)


async def test_refused_credentials(daphne_server: ServerFactory) -> None:
    server = daphne_server()
    # A refused WebSocket handshake is a bare 403; the client asks the SSE endpoint why, and
    # does not retry what retrying cannot fix.
    states = States()
    client = Client(server.http_url, token="nope", on_state=states)
    with pytest.raises(ConnectionRefused) as refused:
        await client.connect()
    assert (refused.value.code, refused.value.status) == ("invalid_credentials", 401)
    assert client.state == "closed" and not states.of("reconnecting")
    await client.close()
    # A 403 for another reason (here: too many connections) is retried, until max_attempts.
    crowded = daphne_server(settings_env({"MAX_CONNECTIONS_PER_IP": 1}))
    async with Client(crowded.http_url):
        client = Client(
            crowded.http_url, backoff=Backoff(base=0.05, cap=0.1, max_attempts=2), on_state=states
        )
        with pytest.raises(ClientClosed) as gave_up:
            await client.connect()
        assert gave_up.value.code == "max_attempts"
        assert [c.code for c in states.of("reconnecting")] == [1006, 1006]
        await client.close()
    # Over SSE the refusal says why, and retrying cannot help: closed at once.
    client = Client(server.http_url, token="nope", transport="sse")
    with pytest.raises(ConnectionRefused) as refused:
        await client.subscribe("public:py:sse")
    assert (refused.value.code, refused.value.status) == ("invalid_credentials", 401)
    assert client.state == "closed"
    await client.close()


# --- Server-Sent Events ------------------------------------------------------------------------


async def test_sse_receives_resumes_and_publishes_over_http(daphne_server: ServerFactory) -> None:
    server = daphne_server()
    stream = "public:chat:py-sse"
    before = asyncio.all_tasks()
    async with Client(server.http_url, transport="sse", backoff=FAST) as client:
        assert client.state == "open"  # idle: no stream asked for yet
        sub = await client.subscribe(stream, since=0)
        assert client.transport == "sse"
        result = await client.publish(stream, "message.created", {"n": 0})
        assert result.seq == 1
        for n in range(1, 4):
            await realtime.apublish(stream, "tick", {"n": n})
        seqs = [item.seq for item in await take(sub, 4)]
        await client.drop()
        for n in range(4, 8):
            await realtime.apublish(stream, "tick", {"n": n})
        seqs += [item.seq for item in await take(sub, 4)]
        assert seqs == list(range(1, 9))
        with pytest.raises(RequestError) as forbidden:
            await client.subscribe("private:sse")
        assert (forbidden.value.code, forbidden.value.status) == ("forbidden", 401)
        assert stream in client.subscriptions
        await eventually(lambda: client.state == "open", 5, "open again, without private:sse")
        await realtime.apublish(stream, "tick", {"n": 8})
        assert (await take(sub, 1))[0].seq == 9
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set(), "close() left tasks behind"


async def test_sse_subscriptions_made_while_a_request_is_on_its_way(
    daphne_server: ServerFactory,
) -> None:
    """Each subscribe re-requests the event stream; one made while the previous request
    was on its way is asked for again once that one is welcomed."""
    server = daphne_server()

    async def slow_ticket() -> None:
        await asyncio.sleep(0.3)  # holds each attempt after it read what to ask for

    async with Client(server.http_url, transport="sse", ticket=slow_ticket) as client:
        streams = [f"public:py:sse-{n}" for n in range(3)]
        tasks = []
        for stream in streams:
            tasks.append(asyncio.create_task(client.subscribe(stream, since=0)))
            await asyncio.sleep(0.1)  # the previous one's request is on its way
        async with asyncio.timeout(10):
            subs = await asyncio.gather(*tasks)
        for stream in streams:
            await realtime.apublish(stream, "tick")
        for sub in subs:
            assert [item.seq for item in await take(sub, 1)] == [1]


async def test_sse_honours_a_draining_servers_retry(daphne_server: ServerFactory) -> None:
    drained = daphne_server(
        settings_env({"DRAIN_SPREAD": SPREAD, "DRAIN_TIMEOUT": 4, "SSE_RETRY": 9999}),
        server="realtime",
    )
    other = daphne_server()
    states = States()
    stream = "public:py:sse-drain"
    async with Client(
        [drained.http_url, other.http_url], transport="sse", on_state=states
    ) as client:
        sub = await client.subscribe(stream, since=0)
        drained._signal(signal.SIGTERM)
        await realtime.apublish(stream, "tick")
        assert [item.seq for item in await take(sub, 1, timeout=15)] == [1]
        cuts = states.of("reconnecting")
        assert len(cuts) == 1, [
            (c.state, c.code, c.reason, c.delay, c.url) for _, c in states.changes
        ]
        (cut,) = cuts
        assert cut.code == 1012 and cut.delay is not None and 0 <= cut.delay <= SPREAD
        assert client.url == other.http_url


# --- the documentation's example -------------------------------------------------------------


DOC = Path(__file__).resolve().parents[2] / "docs" / "python-client.md"


async def test_the_documented_example_runs(daphne_server: ServerFactory) -> None:
    server = daphne_server()
    doc = DOC.read_text()
    code = doc.split("## An example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('URL = "http://127.0.0.1:8000"', f"URL = {server.http_url!r}")
    await realtime.apublish("public:chat:lobby", "message.created", {"text": "earlier"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    # The example's keys are in the order PostgreSQL's jsonb keeps them (shorter first), so its
    # own message prints the same whether it arrives live or read back from history, where
    # a replayed object's keys may come back in another order (docs/protocol.md).
    assert out.decode().splitlines() == [
        "stored as seq 2",
        "1 {'text': 'earlier'}",
        "2 {'text': 'hello', 'author': 'py'}",
        "present: ['anon:py-example']",
    ]


async def test_a_failing_handler_does_not_stop_the_client(
    daphne_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = daphne_server()
    stream = "public:py:handler"
    got: list[int | None] = []

    def on_event(event: Event) -> None:
        got.append(event.seq)
        if event.seq == 1:
            raise RuntimeError("the application's bug")

    async with Client(server.http_url) as client:
        await client.subscribe(stream, on_event=on_event)
        for n in range(3):
            await realtime.apublish(stream, "tick", {"n": n})
        await eventually(lambda: len(got) == 3, 5, "all three events")
        assert got == [1, 2, 3] and client.state == "open"
    assert "the application's bug" in caplog.text


async def test_revoked_access_ends_a_subscription_or_closes_the_client(
    daphne_server: ServerFactory,
) -> None:
    server = daphne_server()
    errors: list[ClientError] = []
    states = States()
    client = Client(server.http_url, on_error=errors.append, on_state=states)
    await client.connect()
    orders = await client.subscribe("public:py:orders")
    lobby = await client.subscribe("public:py:lobby")
    # One stream's access withdrawn: that subscription ends, the client goes on.
    await realtime.arevoke(connection=client.connection_id, streams="public:py:orders")
    with pytest.raises(RequestError) as ended:
        async with asyncio.timeout(5):
            await anext(orders)
    assert ended.value.code == "revoked" and "public:py:orders" not in client.subscriptions
    # The connection's access withdrawn (4401): retrying cannot help, the client closes.
    await realtime.arevoke(connection=client.connection_id)
    with pytest.raises(ConnectionRefused) as closed:
        async with asyncio.timeout(5):
            await anext(lobby)
    assert closed.value.code == "revoked" and client.state == "closed"
    assert [e.code for e in errors] == ["revoked"]
    assert not states.of("reconnecting")
    await client.close()
