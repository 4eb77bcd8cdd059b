"""Capture end to end: every ORM path, and (PostgreSQL) raw SQL from another process, reach
WebSocket and SSE subscribers of real daphne processes, through ``live.rule``, moves between
streams and snapshots. The live models are ``tests.live_capture``'s."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.test import Client

from tests.live_capture.models import Board, Card
from tests.servers import WSClient, open_sse

User = get_user_model()
WS = "/realtime/ws/"


async def session(username: str) -> str:
    def work() -> str:
        client = Client()
        client.force_login(User.objects.create_user(username))
        return str(client.cookies["sessionid"].value)

    return await sync_to_async(work)()


async def subscribe(ws: WSClient, stream: str, **fields: Any) -> dict[str, Any]:
    await ws.send_json({"type": "subscribe", "id": stream, "stream": stream, **fields})
    return await ws.recv_until(lambda f: f.get("id") == stream)


async def events(ws: WSClient, n: int, timeout: float = 10) -> list[tuple[str, int, str, Any]]:
    got = []
    for _ in range(n):
        frame = await ws.recv_until(lambda f: f["type"] == "event", timeout=timeout)
        got.append((frame["stream"], frame["seq"], frame["event"], frame["data"]))
    return got


def run(func: Any) -> Any:
    """Run ``func`` in a worker thread, closing its connection after (as a view would)."""

    def work() -> Any:
        try:
            return func()
        finally:
            connection.close()

    return sync_to_async(work, thread_sensitive=False)()


async def test_every_orm_path_reaches_subscribers_through_the_rule(daphne_server: Any) -> None:
    server = daphne_server()
    board = await Board.objects.acreate(name="b")
    shelf = await Board.objects.acreate(name="shelf")
    cookie = {"Cookie": f"sessionid={await session('member')}"}
    outsider = {"Cookie": f"sessionid={await session('outsider')}"}
    async with (
        WSClient(server.ws_url + WS, headers=cookie) as ws,
        WSClient(server.ws_url + WS, headers=outsider) as other,
        open_sse(f"{server.http_url}/realtime/sse/?stream=cards", headers=cookie) as sse,
    ):
        await ws.recv_until(lambda f: f["type"] == "welcome")
        await other.recv_until(lambda f: f["type"] == "welcome")
        assert (await subscribe(other, "cards"))["type"] == "error"  # members() says no
        assert (await subscribe(ws, "cards"))["type"] == "subscribed"
        assert (await subscribe(ws, f"boards:{board.pk}:cards"))["type"] == "subscribed"

        def bulk_create() -> list[int]:
            made = Card.objects.bulk_create(
                [Card(title=f"c{i}", board=board, shelf=shelf) for i in range(3)]
            )
            return [card.pk for card in made]

        pks = await run(bulk_create)
        got = await events(ws, 6)
        assert sorted((s, q, e) for s, q, e, _ in got) == [
            (f"boards:{board.pk}:cards", 1, "card.created"),
            (f"boards:{board.pk}:cards", 2, "card.created"),
            (f"boards:{board.pk}:cards", 3, "card.created"),
            ("cards", 1, "card.created"),
            ("cards", 2, "card.created"),
            ("cards", 3, "card.created"),
        ]
        await run(lambda: Card.objects.filter(pk=pks[0]).update(price=Decimal("9.90")))
        got = await events(ws, 2)
        assert {(s, e, d["price"]) for s, _, e, d in got} == {
            ("cards", "card.updated", "9.90"),
            (f"boards:{board.pk}:cards", "card.updated", "9.90"),
        }

        def bulk_update() -> None:
            cards = list(Card.objects.filter(pk__in=pks[1:]))
            for card in cards:
                card.board = None  # both leave the board's stream
            Card.objects.bulk_update(cards, ["board"])

        await run(bulk_update)
        got = await events(ws, 4)
        assert sorted((s, e) for s, _, e, _ in got) == [
            (f"boards:{board.pk}:cards", "card.deleted"),
            (f"boards:{board.pk}:cards", "card.deleted"),
            ("cards", "card.updated"),
            ("cards", "card.updated"),
        ]
        await run(lambda: shelf.delete())  # SET_DEFAULT on all three
        got = await events(ws, 4)
        assert sorted((s, d["shelf"]) for s, _, _, d in got) == [
            (f"boards:{board.pk}:cards", None),
            ("cards", None),
            ("cards", None),
            ("cards", None),
        ]
        board_pk = board.pk
        await run(lambda: board.delete())  # SET_NULL: the last card leaves the stream too
        got = await events(ws, 2)
        assert sorted((s, e) for s, _, e, _ in got) == [
            (f"boards:{board_pk}:cards", "card.deleted"),
            ("cards", "card.updated"),
        ]
        await run(lambda: Card.objects.update_or_create(pk=pks[0], defaults={"title": "u"}))
        await run(lambda: Card.objects.get_or_create(title="new"))
        got = await events(ws, 2)
        assert [(e, d["title"]) for _, _, e, d in got] == [
            ("card.updated", "u"),
            ("card.created", "new"),
        ]
        await run(lambda: Card.objects.filter(pk__in=pks).delete())
        got = await events(ws, 3)
        assert sorted((e, d["id"]) for _, _, e, d in got) == [("card.deleted", pk) for pk in pks]
        # A rollback: nothing reaches anyone.

        def rolled_back() -> None:
            try:
                with transaction.atomic():
                    Card.objects.update(rank=9)
                    Card.objects.bulk_create([Card(title="gone")])
                    raise RuntimeError
            except RuntimeError:
                pass

        await run(rolled_back)
        await ws.send_json({"type": "ping", "id": 1})
        after = await ws.recv_until(lambda f: f["type"] in ("pong", "event"))
        assert after["type"] == "pong", after
        received = [await sse.next_event() for _ in range(2 + 15)][2:]
        assert [e["data"]["seq"] for e in received] == list(range(1, 16))  # gapless, SSE too


async def test_snapshot_after_a_bulk_path(daphne_server: Any) -> None:
    server = daphne_server()
    cookie = {"Cookie": f"sessionid={await session('member')}"}
    await run(lambda: Card.objects.bulk_create([Card(title=f"s{i}") for i in range(3)]))
    await run(lambda: Card.objects.update(done=True))
    async with WSClient(server.ws_url + WS, headers=cookie) as ws:
        await ws.recv_until(lambda f: f["type"] == "welcome")
        subscribed = await subscribe(ws, "cards", since=2, epoch="stale")
        assert (subscribed["recovered"], subscribed["seq"]) == (False, 6)
        snapshot = await ws.recv_until(lambda f: f["type"] == "snapshot")
        assert [(c["title"], c["done"]) for c in snapshot["data"]["objects"]] == [
            (f"s{i}", True) for i in range(3)
        ]
        await run(lambda: Card.objects.filter(title="s0").update(rank=1))
        (event,) = await events(ws, 1)
        assert event[1:3] == (7, "card.updated")


pg_only = pytest.mark.postgresql  # writes outside the ORM are captured by PostgreSQL triggers

WRITER = """
import os, sys, psycopg
with psycopg.connect(os.environ["WRITER_DSN"], autocommit=True) as conn:
    for statement in sys.argv[1:]:
        conn.execute(statement)
"""


def raw_writer(*statements: str) -> None:
    """Another program writing the table: python + psycopg in a process of its own."""
    params = connections["default"].get_connection_params()
    dsn = " ".join(
        f"{key}={value}"
        for key, value in params.items()
        if key in ("dbname", "user", "password", "host", "port") and value
    )
    subprocess.run(
        [sys.executable, "-c", WRITER, *statements],
        env={**os.environ, "WRITER_DSN": dsn},
        check=True,
        timeout=30,
    )


@pg_only
async def test_raw_sql_from_another_process_reaches_subscribers_at_once(
    daphne_server: Any,
) -> None:
    # The reconciler would take a minute: what arrives sooner was woken by NOTIFY.
    server = daphne_server({"REALTIME_RECONCILE_INTERVAL": "60"})
    cookie = {"Cookie": f"sessionid={await session('member')}"}
    board = await Board.objects.acreate(name="raw")
    async with WSClient(server.ws_url + WS, headers=cookie) as ws:
        await ws.recv_until(lambda f: f["type"] == "welcome")
        await subscribe(ws, "cards")
        await subscribe(ws, f"boards:{board.pk}:cards")
        began = time.monotonic()
        await sync_to_async(raw_writer, thread_sensitive=False)(
            "INSERT INTO live_capture_card (title, board_id, price, uid, meta, done, rank)"
            f" VALUES ('from psql', {board.pk}, 1.5, gen_random_uuid(), '{{}}', false, 0)",
        )
        got = await events(ws, 2, timeout=10)
        waited = time.monotonic() - began
        assert sorted((s, q, e) for s, q, e, _ in got) == [
            (f"boards:{board.pk}:cards", 1, "card.created"),
            ("cards", 1, "card.created"),
        ]
        data = got[0][3]
        assert (data["title"], data["price"], data["board"]) == ("from psql", "1.50", board.pk)
        assert waited < 5, waited
        await sync_to_async(raw_writer, thread_sensitive=False)(
            f"UPDATE live_capture_card SET board_id = NULL WHERE board_id = {board.pk}",
            "DELETE FROM live_capture_card WHERE title = 'from psql'",
        )
        got = await events(ws, 3, timeout=10)
        assert sorted((s, q, e) for s, q, e, _ in got) == [
            (f"boards:{board.pk}:cards", 2, "card.deleted"),
            ("cards", 2, "card.updated"),
            ("cards", 3, "card.deleted"),
        ]
        # The ORM still publishes once, next in line.
        await Card.objects.acreate(title="orm")
        (event,) = await events(ws, 1)
        assert event[:3] == ("cards", 4, "card.created")
        await sync_to_async(raw_writer, thread_sensitive=False)(
            "INSERT INTO live_capture_card (title, price, uid, meta, done, rank)"
            " VALUES ('raw again', 0, gen_random_uuid(), '{}', false, 0)",
        )
        (event,) = await events(ws, 1)
        assert event[:3] == ("cards", 5, "card.created")
    # A client that cannot be recovered gets the rows, whoever wrote them.
    async with WSClient(server.ws_url + WS, headers=cookie) as late:
        await late.recv_until(lambda f: f["type"] == "welcome")
        subscribed = await subscribe(late, "cards", since=1, epoch="stale")
        assert (subscribed["recovered"], subscribed["seq"]) == (False, 5)
        snapshot = await late.recv_until(lambda f: f["type"] == "snapshot")
        assert [c["title"] for c in snapshot["data"]["objects"]] == ["orm", "raw again"]


def test_the_cost_tool_runs() -> None:
    """``bench.capture`` in miniature (SQLite), so the tool behind docs/live-models.md's
    figures cannot rot."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.capture", "--rows", "50", "--runs", "1", "--saves", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [line for line in out.stdout.splitlines() if line.startswith("| SQLite")]
    assert len(rows) == 4 and "50-row `bulk_create` | on" in rows[0], out.stdout
