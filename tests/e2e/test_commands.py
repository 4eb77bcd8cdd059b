"""The management commands: ``realtime_publish`` and ``realtime_prune``.

Behaviour is checked in-process with ``call_command``; exit codes and messages as a user
sees them through ``manage.py`` in a subprocess (``run_manage``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.utils import timezone

from realtime.core.publishing import publish
from realtime.models import Event, Stream
from tests.servers import Server, WSClient, arun_manage, run_manage

ServerFactory = Callable[..., Server]


def stored(stream: str) -> list[tuple[int, str, Any]]:
    return list(Event.objects.filter(stream__name=stream).values_list("seq", "event", "data"))


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def assert_clean_failure(result: Any, message: str) -> None:
    """A non-zero exit with ``message`` on stderr, and no traceback."""
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# --- realtime_publish -------------------------------------------------------------------


@pytest.mark.django_db
def test_publish_prints_the_seq_and_stores_the_event() -> None:
    assert run("realtime_publish", "public:x", "t.e", '{"n": 1}').strip() == (
        "Published public:x#1 (t.e)."
    )
    assert run("realtime_publish", "public:x", "t.f", "[1, 2]").strip() == (
        "Published public:x#2 (t.f)."
    )
    # DATA defaults to null.
    assert run("realtime_publish", "public:x", "t.g").strip() == "Published public:x#3 (t.g)."
    assert stored("public:x") == [(1, "t.e", {"n": 1}), (2, "t.f", [1, 2]), (3, "t.g", None)]


@pytest.mark.django_db(transaction=True)
def test_publish_through_manage_py() -> None:
    result = run_manage("realtime_publish", "public:x", "t.e", '{"text": "héllo"}')
    assert result.stdout.strip() == "Published public:x#1 (t.e)."
    assert stored("public:x") == [(1, "t.e", {"text": "héllo"})]


@pytest.mark.django_db
def test_publish_invalid_arguments_raise_command_error() -> None:
    with pytest.raises(CommandError, match="DATA is not valid JSON"):
        run("realtime_publish", "public:x", "t.e", "{not json")
    with pytest.raises(CommandError, match="Stream name may contain only"):
        run("realtime_publish", "bad stream", "t.e")
    with pytest.raises(CommandError, match="reserved"):
        run("realtime_publish", "public:x", "realtime.x")
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_publish_failures_exit_non_zero_with_a_message() -> None:
    commands = {
        "json": ("public:x", "t.e", "{not json"),
        "stream": ("bad stream!", "t.e"),
        "long": ("x" * 201, "t.e"),
        "event": ("public:x", "bad event"),
        # Python's json accepts NaN and Infinity; they are not JSON and cannot be sent.
        "nan": ("public:x", "t.e", '{"x": NaN}'),
        "infinity": ("public:x", "t.e", "Infinity", "--ephemeral"),
    }
    results = dict(
        zip(
            commands,
            await asyncio.gather(
                *(arun_manage("realtime_publish", *args, check=False) for args in commands.values())
            ),
            strict=True,
        )
    )
    assert_clean_failure(results["json"], "DATA is not valid JSON")
    assert_clean_failure(results["stream"], "Stream name may contain only")
    assert_clean_failure(results["long"], "Stream name must be 1 to 200 characters long")
    assert_clean_failure(results["event"], "Event type must be")
    assert_clean_failure(results["nan"], "DATA is not valid JSON")
    assert_clean_failure(results["infinity"], "DATA is not valid JSON")
    assert not await sync_to_async(Event.objects.exists)()


@pytest.mark.django_db
def test_publish_ephemeral_stores_nothing() -> None:
    out = run("realtime_publish", "public:x", "cursor.moved", '{"x": 1}', "--ephemeral")
    assert out.strip() == "Sent ephemeral cursor.moved to public:x."
    assert not Event.objects.exists()
    assert not Stream.objects.filter(name="public:x", last_seq__gt=0).exists()


async def test_published_events_reach_subscribers(daphne_server: ServerFactory) -> None:
    server = daphne_server()
    async with WSClient(server.ws_url + "/realtime/ws/") as ws:
        assert (await ws.recv_json())["type"] == "welcome"
        await ws.send_json({"type": "subscribe", "stream": "public:x"})
        assert (await ws.recv_json())["type"] == "subscribed"

        await arun_manage("realtime_publish", "public:x", "t.e", '{"n": 1}')
        event = await ws.recv_json()
        assert (event["seq"], event["event"], event["data"]) == (1, "t.e", {"n": 1})

        result = await arun_manage(
            "realtime_publish", "public:x", "cursor.moved", '{"x": 2}', "--ephemeral"
        )
        assert "ephemeral" in result.stdout
        event = await ws.recv_json()
        assert "seq" not in event
        assert (event["type"], event["event"], event["data"]) == ("event", "cursor.moved", {"x": 2})


def test_publish_help() -> None:
    result = run_manage("realtime_publish", "--help")
    assert "Publish one event to a stream" in result.stdout
    for word in ("stream", "event", "data", "--ephemeral"):
        assert word in result.stdout


# --- realtime_prune ---------------------------------------------------------------------


def set_retention(settings: Any, retention: dict[str, Any]) -> None:
    settings.REALTIME = {**settings.REALTIME, "RETENTION": retention}


def publish_n(stream: str, count: int) -> None:
    for n in range(1, count + 1):
        publish(stream, "t.e", {"n": n})


def seqs(stream: str) -> list[int]:
    return list(Event.objects.filter(stream__name=stream).values_list("seq", flat=True))


@pytest.mark.django_db
def test_prune_enforces_a_tightened_max_events(settings: Any) -> None:
    set_retention(settings, {"public:*": {"max_events": 100}, "*": {"max_events": None}})
    publish_n("public:p", 10)
    publish_n("other:q", 10)
    assert seqs("public:p") == list(range(1, 11))

    set_retention(settings, {"public:*": {"max_events": 3}, "*": {"max_events": None}})
    out = run("realtime_prune")
    assert "Deleted 7 event(s)," in out
    assert seqs("public:p") == [8, 9, 10]
    stream = Stream.objects.get(name="public:p")
    assert (stream.last_seq, stream.trimmed_seq) == (10, 7)
    assert seqs("other:q") == list(range(1, 11))
    assert Stream.objects.get(name="other:q").trimmed_seq == 0

    # Nothing left to do the second time.
    assert "Deleted 0 event(s)," in run("realtime_prune")
    assert seqs("public:p") == [8, 9, 10]


@pytest.mark.django_db
def test_prune_max_events_zero_keeps_nothing(settings: Any) -> None:
    set_retention(settings, {"public:*": {"max_events": None}})
    publish_n("public:p", 4)
    set_retention(settings, {"public:*": {"max_events": 0}})
    assert "Deleted 4 event(s)," in run("realtime_prune")
    assert seqs("public:p") == []
    assert Stream.objects.get(name="public:p").trimmed_seq == 4


def age(stream: str, upto_seq: int, by: timedelta, only: int | None = None) -> None:
    events = Event.objects.filter(stream__name=stream)
    events = events.filter(seq=only) if only is not None else events.filter(seq__lte=upto_seq)
    events.update(ts=timezone.now() - by)


@pytest.mark.django_db
def test_prune_deletes_events_older_than_max_age(settings: Any) -> None:
    set_retention(settings, {"public:*": {"max_age": 3600}})
    publish_n("public:p", 5)
    publish_n("other:q", 2)
    age("public:p", 3, timedelta(hours=2))
    age("other:q", 2, timedelta(days=30))  # matches no rule: kept forever

    out = run("realtime_prune")
    assert "Deleted 3 event(s)," in out
    assert seqs("public:p") == [4, 5]
    assert Stream.objects.get(name="public:p").trimmed_seq == 3
    assert seqs("other:q") == [1, 2]


@pytest.mark.django_db
def test_prune_max_age_keeps_history_gapless(settings: Any) -> None:
    set_retention(settings, {"*": {"max_age": timedelta(minutes=5)}})
    publish_n("public:p", 4)
    # Only seq 2 is old (clock skew between publishers): 1 goes with it.
    age("public:p", 0, timedelta(minutes=10), only=2)
    assert "Deleted 2 event(s)," in run("realtime_prune")
    assert seqs("public:p") == [3, 4]
    assert Stream.objects.get(name="public:p").trimmed_seq == 2


@pytest.mark.django_db
def test_prune_lists_the_rules(settings: Any) -> None:
    set_retention(
        settings,
        {"chat:*": {"max_events": 500, "max_age": 86400}, "*": {"max_age": timedelta(days=7)}},
    )
    publish_n("chat:1", 2)
    age("chat:1", 2, timedelta(days=2))
    out = run("realtime_prune", "--rules")
    lines = out.splitlines()
    assert lines[0] == "Retention rules (first match wins):"
    assert "chat:*" in lines[1] and "500 events" in lines[1] and "86400 s" in lines[1]
    assert "*" in lines[2] and "no limit" in lines[2] and "604800 s" in lines[2]
    # --rules only prints: the old events are still there.
    assert "Deleted" not in out
    assert seqs("chat:1") == [1, 2]


@pytest.mark.django_db
def test_prune_without_rules(settings: Any) -> None:
    set_retention(settings, {})
    publish_n("public:p", 2)
    out = run("realtime_prune")
    assert "(none: every stream keeps all its events)" in out
    assert "Deleted 0 event(s)," in out
    assert seqs("public:p") == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_prune_through_manage_py_with_settings_from_the_environment() -> None:
    for n in range(6):
        publish("public:p", "t.e", n)
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "REALTIME_TEST_OVERRIDES": json.dumps({"RETENTION": {"public:*": {"max_events": 2}}}),
    }
    result = run_manage("realtime_prune", env=env)
    assert "Deleted 4 event(s)," in result.stdout
    assert seqs("public:p") == [5, 6]
    assert Stream.objects.get(name="public:p").trimmed_seq == 4


def test_prune_help() -> None:
    result = run_manage("realtime_prune", "--help")
    assert "Delete what retention no longer keeps" in result.stdout
    assert "stream rows left with no events and no subscribers" in result.stdout
    assert "--rules" in result.stdout
