"""Prometheus metrics: the exposition of gathered figures, who may read them, and real
figures from several daphne processes changing as connections come and go."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

import realtime
from realtime.core.gather import Gathered, gather
from realtime.core.stats import LATENCY_BUCKETS, Stats
from realtime.endpoints.metrics import render, server_labels
from tests.servers import Server, WSClient, open_sse

User = get_user_model()
ServerFactory = Callable[..., Server]
TOKEN = "metrics-token-" + "x" * 32
URL = "/realtime/metrics"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def describe(server: str, hostname: str, pid: int, stats: Stats, alerts: Any = ()) -> dict:
    return {
        "server": server,
        "hostname": hostname,
        "pid": pid,
        "stats": stats.snapshot(),
        "rates": {},
        "alerts": list(alerts),
    }


# --- the exposition ---------------------------------------------------------------------------
def test_render_labels_every_process_and_exposes_every_figure() -> None:
    one = Stats(started=1000.0)
    one.connections.update(websocket=3, sse=1)
    one.subscriptions, one.published, one.deliveries = 5, 7, 40
    one.resumes, one.replayed, one.slow_consumer_drops = 2, 9, 1
    one.auth_failures["invalid_credentials"] += 4
    one.errors["forbidden"] += 2
    for seconds in (0.0005, 0.002, 0.002, 0.3, 9.0):
        one.observe_latency(seconds)
    two = Stats()
    gathered = Gathered(
        replies=[
            describe("a" * 32, "web1", 11, one, [{"name": "connections_per_process"}]),
            describe("b" * 32, "web2", 22, two),
        ],
        expected=3,
        elapsed=0.01,
    )
    found = samples(render(gathered, expired_leases=1, sweeper_lag=12.5).decode())

    assert value(found, "realtime_servers_expected") == 3
    assert value(found, "realtime_servers_reporting") == 2
    assert value(found, "realtime_expired_leases") == 1
    assert value(found, "realtime_sweeper_lag_seconds") == 12.5
    assert value(found, "realtime_connections", server="web1:11", transport="websocket") == 3
    assert value(found, "realtime_connections", server="web1:11", transport="sse") == 1
    # A process without connections still has both series (at 0), so none vanishes.
    assert value(found, "realtime_connections", server="web2:22", transport="websocket") == 0
    assert value(found, "realtime_connections", server="web2:22", transport="sse") == 0
    assert value(found, "realtime_subscriptions", server="web1:11") == 5
    assert value(found, "realtime_events_published_total", server="web1:11") == 7
    assert value(found, "realtime_deliveries_total", server="web1:11") == 40
    assert value(found, "realtime_resume_requests_total", server="web1:11") == 2
    assert value(found, "realtime_replayed_events_total", server="web1:11") == 9
    assert value(found, "realtime_slow_consumer_drops_total", server="web1:11") == 1
    assert (
        value(found, "realtime_auth_failures_total", server="web1:11", code="invalid_credentials")
        == 4
    )
    assert value(found, "realtime_errors_total", server="web1:11", code="forbidden") == 2
    assert value(found, "realtime_server_start_time_seconds", server="web1:11") == 1000.0
    assert (
        value(
            found, "realtime_server_info", server="web1:11", id="a" * 32, hostname="web1", pid="11"
        )
        == 1
    )
    assert value(found, "realtime_alert_active", server="web1:11", alert="connections_per_process")
    # The histogram is cumulative, with +Inf counting everything.
    bucket = "realtime_fanout_latency_seconds_bucket"
    assert value(found, bucket, server="web1:11", le="0.001") == 1
    assert value(found, bucket, server="web1:11", le="0.0025") == 3
    assert value(found, bucket, server="web1:11", le="0.25") == 3
    assert value(found, bucket, server="web1:11", le="0.5") == 4
    assert value(found, bucket, server="web1:11", le="5.0") == 4
    assert value(found, bucket, server="web1:11", le="+Inf") == 5
    assert value(found, "realtime_fanout_latency_seconds_count", server="web1:11") == 5
    assert value(found, "realtime_fanout_latency_seconds_sum", server="web1:11") == pytest.approx(
        9.3045
    )
    assert (
        len([k for k in found if k[0] == bucket and ("server", "web2:22") in k[1]])
        == len(LATENCY_BUCKETS) + 1
    )


def test_server_labels_stay_unique() -> None:
    replies = [
        {"server": "1" * 32, "hostname": "app", "pid": 1},
        {"server": "2" * 32, "hostname": "app", "pid": 1},  # two containers, one hostname
        {"server": "3" * 32, "hostname": "app", "pid": 2},
    ]
    assert server_labels(replies) == ["app:1/11111111", "app:1/22222222", "app:2"]


def test_an_empty_gather_is_a_valid_scrape() -> None:
    found = samples(render(Gathered()).decode())
    assert value(found, "realtime_servers_expected") == 0
    assert value(found, "realtime_servers_reporting") == 0


# --- who may read them ----------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_need_staff_or_the_token(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "METRICS_TOKEN": TOKEN}
    anonymous = Client()
    response = anonymous.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.get(URL, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert anonymous.get(URL, headers={"Authorization": f"Token {TOKEN}"}).status_code == 401
    ok = anonymous.get(URL, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "realtime_servers_expected" in ok.content.decode()
    assert "no-cache" in ok["Cache-Control"] or "max-age=0" in ok["Cache-Control"]
    assert anonymous.post(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405

    member = Client()
    member.force_login(User.objects.create_user("member", password="x"))
    assert member.get(URL).status_code == 403
    staff = Client()
    staff.force_login(User.objects.create_user("staff", password="x", is_staff=True))
    assert staff.get(URL).status_code == 200

    # A list of tokens, for rotation; no token configured: bearer requests are refused.
    settings.REALTIME = {**settings.REALTIME, "METRICS_TOKEN": ["old" * 12, TOKEN]}
    assert anonymous.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    settings.REALTIME = {**settings.REALTIME, "METRICS_TOKEN": None}
    assert anonymous.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert anonymous.get(URL, headers={"Authorization": "Bearer "}).status_code == 401


# --- real processes -------------------------------------------------------------------------
async def scrape(server: Server) -> dict[Any, float]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(
            server.http_url + URL, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 200, response.text
    return samples(response.text)


async def scrape_until(
    server: Server, check: Callable[[dict[Any, float]], bool], timeout: float = 10
) -> dict[Any, float]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await scrape(server)
        if check(found) or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


def label(found: dict[Any, float], pid: int) -> str:
    """The ``server`` label of the process with ``pid``."""
    for (name, labels), _ in found.items():
        if name == "realtime_server_info" and dict(labels)["pid"] == str(pid):
            return dict(labels)["server"]
    raise AssertionError(f"no realtime_server_info for pid {pid}")


async def test_metrics_of_several_processes_follow_connections(
    daphne_server: ServerFactory,
) -> None:
    overrides = json.dumps({"METRICS_TOKEN": TOKEN})
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings", "REALTIME_TEST_OVERRIDES": overrides}
    a, b = daphne_server(env), daphne_server(env)
    found = await scrape(a)
    assert value(found, "realtime_servers_expected") == 0  # no hub started yet

    async with (
        WSClient(a.ws_url + "/realtime/ws/") as ws_a,
        WSClient(b.ws_url + "/realtime/ws/") as ws_b,
        open_sse(b.http_url + "/realtime/sse/?stream=public:m") as sse,
    ):
        for ws in (ws_a, ws_b):
            await ws.recv_until(lambda f: f["type"] == "welcome")
        await ws_b.send_json({"type": "subscribe", "stream": "public:m", "since": 0})
        await ws_b.recv_until(lambda f: f["type"] == "subscribed")
        await sse.next_event()
        found = await scrape(a)  # scraped from A: B's figures come over the channel layer
        assert value(found, "realtime_servers_expected") == 2
        assert value(found, "realtime_servers_reporting") == 2
        la, lb = label(found, a.pid), label(found, b.pid)
        assert value(found, "realtime_connections", server=la, transport="websocket") == 1
        assert value(found, "realtime_connections", server=la, transport="sse") == 0
        assert value(found, "realtime_connections", server=lb, transport="websocket") == 1
        assert value(found, "realtime_connections", server=lb, transport="sse") == 1
        assert value(found, "realtime_subscriptions", server=lb) == 2
        assert value(found, "realtime_resume_requests_total", server=lb) == 1
        before = value(found, "realtime_deliveries_total", server=lb)

        await realtime.apublish("public:m", "t.e", {"n": 1})
        await ws_b.recv_until(lambda f: f["type"] == "event")
        found = await scrape_until(
            b, lambda f: value(f, "realtime_deliveries_total", server=lb) == before + 2
        )
        assert value(found, "realtime_deliveries_total", server=lb) == before + 2
        assert value(found, "realtime_fanout_latency_seconds_count", server=lb) == 1
        await ws_b.send_json({"type": "subscribe", "stream": "private:x"})
        await ws_b.recv_until(lambda f: f["type"] == "error")
        found = await scrape(a)
        assert value(found, "realtime_errors_total", server=lb, code="forbidden") == 1

    # Closed: the gauges go back to 0 (the processes keep their leases and go on reporting).
    found = await scrape_until(
        a,
        lambda f: (
            value(f, "realtime_connections", server=lb, transport="sse") == 0
            and value(f, "realtime_connections", server=lb, transport="websocket") == 0
            and value(f, "realtime_connections", server=la, transport="websocket") == 0
        ),
    )
    assert value(found, "realtime_servers_reporting") == 2
    for server in (la, lb):
        for transport in ("websocket", "sse"):
            assert value(found, "realtime_connections", server=server, transport=transport) == 0
        assert value(found, "realtime_subscriptions", server=server) == 0

    # Refused handshakes are counted by reason.
    async with httpx.AsyncClient() as http:
        refused = await http.get(
            f"{a.http_url}/realtime/sse/?stream=public:m", headers={"Authorization": "Token bad"}
        )
    assert refused.status_code == 401
    found = await scrape(b)
    assert value(found, "realtime_auth_failures_total", server=la, code="invalid_credentials") == 1


async def test_a_process_that_does_not_answer_makes_a_partial_scrape(
    daphne_server: ServerFactory,
) -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "REALTIME_TEST_OVERRIDES": json.dumps({"METRICS_TOKEN": TOKEN}),
    }
    a, b = daphne_server(env), daphne_server(env)
    async with (
        WSClient(a.ws_url + "/realtime/ws/") as ws_a,
        WSClient(b.ws_url + "/realtime/ws/") as ws_b,
    ):
        await ws_a.recv_until(lambda f: f["type"] == "welcome")
        await ws_b.recv_until(lambda f: f["type"] == "welcome")
        b.kill()  # its lease stays live for a while: expected, but silent
        found = await scrape(a)
    assert value(found, "realtime_servers_expected") == 2
    assert value(found, "realtime_servers_reporting") == 1
    assert 0.9 <= value(found, "realtime_gather_duration_seconds") < 3


async def test_gathers_from_successive_event_loops(daphne_server: ServerFactory) -> None:
    """Sync callers (a WSGI view, a command) gather through async_to_sync, each call in a
    new event loop: channels-redis's per-channel receive lock must not stay with a finished
    loop, or every later gather in the process waits in vain."""
    server = daphne_server()
    async with WSClient(server.ws_url + "/realtime/ws/") as ws:
        await ws.recv_until(lambda f: f["type"] == "welcome")
        # A plain thread: async_to_sync makes a new loop for each call.
        reporting = [(await asyncio.to_thread(gather, 2.0)).reporting for _ in range(3)]
    assert reporting == [1, 1, 1]
