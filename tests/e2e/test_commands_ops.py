"""The operations commands: ``realtime_status``, ``realtime_tail`` and the help texts of all
three (``realtime_prune``'s behaviour is in test_commands.py)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

import realtime
from realtime.models import Connection, PresenceMember, Server, UserStatus
from tests.servers import ROOT, WSClient, arun_manage, run_manage, server_env
from tests.servers import Server as Daphne

ServerFactory = Callable[..., Daphne]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- help ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        (
            "realtime_status",
            ["Show what the realtime service is doing", "--json", "--no-live", "examples:"],
        ),
        (
            "realtime_tail",
            ["like `tail -f`", "--since SEQ", "--count N", "--timeout S", "Ctrl-C", "examples:"],
        ),
        (
            "realtime_prune",
            ["Delete what retention", "PRESENCE_HISTORY_RETENTION", "PRUNE_INTERVAL", "crontab"],
        ),
    ],
)
def test_help_explains_each_command(command: str, phrases: list[str]) -> None:
    out = run_manage(command, "--help").stdout
    for phrase in phrases:
        assert phrase in out, phrase
    # Written for a reader: every line fits a terminal.
    assert max(len(line) for line in out.splitlines()) <= 100


# --- realtime_status ------------------------------------------------------------------------
def deployment() -> None:
    now = timezone.now()
    ada = get_user_model().objects.create_user("ada")
    live = Server.objects.create(
        id="a" * 32, channel="c", hostname="web1", pid=7, expires_at=now + timedelta(seconds=15)
    )
    Server.objects.create(
        id="d" * 32, channel="d", hostname="web9", pid=9, expires_at=now - timedelta(seconds=40)
    )
    Connection.objects.create(
        id="1" * 32, server=live, user=ada, transport="websocket", streams=["public:a", "chat:1"]
    )
    Connection.objects.create(id="2" * 32, server=live, transport="websocket", streams=["public:a"])
    Connection.objects.create(id="3" * 32, server=live, transport="sse", streams=["chat:1"])
    UserStatus.objects.create(user=ada, online=True)
    PresenceMember.objects.create(stream="chat:1", key=str(ada.pk))
    for n in range(3):
        realtime.publish("public:a", "t.e", {"n": n})


@pytest.mark.django_db(transaction=True)
def test_status_reads_the_database_without_servers() -> None:
    deployment()
    out = run("realtime_status", "--timeout", "0.2")
    assert "Servers: 1 live, 1 expired" in out
    web1 = next(line for line in out.splitlines() if "web1:7" in line)
    assert re.search(r" left +2 +1 +- +- +\(not reporting\)$", web1), web1  # WS, SSE
    assert "expired" in next(line for line in out.splitlines() if "web9:9" in line)
    assert "Totals: 3 connections (2 WebSocket, 1 SSE), 1 user online" in out
    assert "1 presence member on 1 stream" in out
    section = out.split("Streams (most subscribers)")[1].split("\n\n")[0].splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in section[2:]}
    assert rows == {"chat:1": ["2", "0", "0"], "public:a": ["2", "3", "3"]}
    assert "Sweeper: 1 expired lease(s) not swept yet" in out
    assert "Live figures: 0 of 1 server(s) answered" in out

    data = json.loads(run("realtime_status", "--json", "--no-live"))
    assert data["connections"] == {"total": 3, "websocket": 2, "sse": 1}
    assert [s["name"] for s in data["servers"]] == ["web1:7", "web9:9"]
    assert data["servers"][0]["connections"] == {"websocket": 2, "sse": 1}
    assert data["streams_by_events"][0] == {
        "name": "public:a",
        "last_seq": 3,
        "events": 3,
        "events_per_second": 0.01,
        "subscribers": 2,
    }
    assert data["users_online"] == 1
    assert data["presence"] == {"members": 1, "streams": 1}
    assert data["sweeper"]["expired_leases"] == 1 and data["sweeper"]["lag_seconds"] >= 40
    assert data["live"]["asked"] is False
    assert "Live figures: not asked" in run("realtime_status", "--no-live")


@pytest.mark.django_db(transaction=True)
def test_status_of_an_empty_deployment() -> None:
    out = run("realtime_status")
    assert "No server process holds a lease" in out
    assert "Totals: 0 connections" in out
    assert "No connection is subscribed to anything." in out
    assert "Sweeper: on time" in out


async def test_status_adds_each_running_servers_own_figures(daphne_server: ServerFactory) -> None:
    a, b = daphne_server(), daphne_server()
    async with (
        WSClient(a.ws_url + "/realtime/ws/") as ws_a,
        WSClient(b.ws_url + "/realtime/ws/") as ws_b,
    ):
        for ws in (ws_a, ws_b):
            await ws.recv_until(lambda f: f["type"] == "welcome")
        await ws_b.send_json({"type": "subscribe", "stream": "public:s"})
        await ws_b.recv_until(lambda f: f["type"] == "subscribed")
        result = await arun_manage("realtime_status", "--json")
        text = (await arun_manage("realtime_status")).stdout
    data = json.loads(result.stdout)
    assert data["live"]["expected"] == 2 and data["live"]["reporting"] == 2
    by_pid = {s["pid"]: s for s in data["servers"]}
    assert by_pid[a.pid]["reporting"] and by_pid[b.pid]["reporting"]
    assert by_pid[a.pid]["live"]["connections"] == {"websocket": 1}
    assert by_pid[b.pid]["live"]["subscriptions"] == 1
    assert "Live figures: 2 of 2 server(s) answered" in text


# --- realtime_tail --------------------------------------------------------------------------
class Tail:
    """``manage.py realtime_tail`` running in a subprocess."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args, self.env = args, env
        self.process: asyncio.subprocess.Process | None = None
        self.printed = b""  # stdout read before finish()

    async def __aenter__(self) -> Tail:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "manage.py"),
            "realtime_tail",
            *self.args,
            cwd=ROOT,
            env=server_env(self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # It says so on stderr once it listens and knows where the history starts (it prints
        # the history after that: see read_lines).
        assert self.process.stderr is not None
        line = await asyncio.wait_for(self.process.stderr.readline(), 20)
        assert b"following" in line, line
        return self

    async def read_lines(self, count: int, timeout: float = 20) -> None:
        """Wait for ``count`` lines on stdout (kept for ``finish``)."""
        assert self.process is not None and self.process.stdout is not None
        for _ in range(count):
            self.printed += await asyncio.wait_for(self.process.stdout.readline(), timeout)

    async def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        assert self.process is not None
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        return self.process.returncode or 0, (self.printed + out).decode(), err.decode()

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.mark.django_db(transaction=True)
async def test_tail_prints_history_then_live_events_including_ephemeral() -> None:
    for n in range(1, 4):
        await realtime.apublish("public:t", "t.old", {"n": n})
    async with Tail("public:t", "-n", "2", "--json", "--count", "5", "--timeout", "30") as tail:
        # The history first: a live event published before it is read would be printed from
        # the database with it, ahead of an ephemeral event sent after it.
        await tail.read_lines(2)
        await realtime.apublish("public:t", "t.new", {"n": 4})
        await realtime.apublish("public:t", "cursor.moved", {"x": 1}, ephemeral=True)
        await realtime.apublish("public:t", "t.new", {"n": 5})
        code, out, err = await tail.finish()
    assert code == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    assert [(f.get("seq"), f["event"]) for f in frames] == [
        (2, "t.old"),
        (3, "t.old"),
        (4, "t.new"),
        (None, "cursor.moved"),
        (5, "t.new"),
    ]
    assert frames[0]["stream"] == "public:t" and frames[0]["data"] == {"n": 2}
    assert all(f["type"] == "event" and f["ts"].endswith("Z") for f in frames)


@pytest.mark.django_db(transaction=True)
async def test_tail_reads_the_database_with_the_in_memory_layer() -> None:
    """No Redis: events published by another process arrive by polling, in order."""
    env = {"REDIS_URL": ""}
    async with Tail("public:m", "--since", "0", "--count", "3", "--timeout", "30", env=env) as tail:
        for n in range(3):
            await arun_manage("realtime_publish", "public:m", "t.e", json.dumps({"n": n}), env=env)
        code, out, err = await tail.finish()
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert lines[0].split()[2:] == ["t.e", '{"n":', "0}"]


@pytest.mark.django_db(transaction=True)
async def test_tail_stops_cleanly_on_ctrl_c_and_on_timeout() -> None:
    async with Tail("public:c") as tail:
        assert tail.process is not None
        tail.process.send_signal(signal.SIGINT)
        code, out, err = await tail.finish()
    assert code == 0
    assert "Traceback" not in err and out == ""
    result = await arun_manage("realtime_tail", "public:c", "--timeout", "0.5", "-v", "0")
    assert result.returncode == 0 and result.stdout == result.stderr == ""


@pytest.mark.django_db
def test_tail_refuses_bad_arguments() -> None:
    with pytest.raises(CommandError, match="Stream name"):
        call_command("realtime_tail", "bad stream!")
    with pytest.raises(CommandError, match=">= 0"):
        call_command("realtime_tail", "public:x", "--since", "-1")


async def test_tail_follows_a_stream_published_through_a_server(
    daphne_server: ServerFactory,
) -> None:
    """What a client publishes through a daphne process, seen by a separate process."""
    server = daphne_server()
    async with Tail("public:chat:ops", "-n", "0", "--count", "1", "--timeout", "30") as tail:
        async with WSClient(server.ws_url + "/realtime/ws/") as ws:
            await ws.recv_until(lambda f: f["type"] == "welcome")
            await ws.send_json(
                {"type": "publish", "stream": "public:chat:ops", "event": "msg", "data": "hi"}
            )
            await ws.recv_until(lambda f: f["type"] == "ack")
        code, out, _ = await tail.finish()
    assert code == 0
    assert out.split()[0] == "1" and out.split()[2:] == ["msg", '"hi"']
