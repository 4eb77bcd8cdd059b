"""``bench.load`` against real daphne processes, briefly, so that the tool cannot rot.

A handful of WebSocket and SSE clients, a few seconds of publishing, and the report must say
what the clients saw: every connection held, every event delivered once, latencies and the
server's RSS filled in. The SSE clients acknowledge every few frames here (the tool's
default is every 500), so the heartbeat POST that keeps their flow-control window open is
exercised too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench import load
from tests.servers import Server

ServerFactory = Callable[..., Server]


def check_clean(report: dict[str, Any], ws: int, sse: int) -> None:
    conns = report["connections"]
    assert conns["start"]["ws_subscribed"] == ws, report
    assert conns["start"]["sse_subscribed"] == sse, report
    assert conns["held"] == ws + sse, report
    published = report["publish"]
    assert published["errors"] == 0, published
    assert published["count"] > 0, published
    everything = report["delivery"]["all"]
    assert everything["expected"] == published["count"] * (ws + sse), everything
    assert everything["delivered"] == everything["expected"], everything
    assert everything["loss"] == 0 and everything["duplicates"] == 0, everything
    assert everything["p50_ms"] is not None and everything["p99_ms"] is not None, everything
    assert everything["deliveries_per_s"] > 0, everything
    assert report["errors"] == [], report["errors"]
    assert load.clean(report)


async def test_realtime_websocket_and_sse_clients_through_the_api(
    daphne_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = daphne_server()
    monkeypatch.setattr(load, "ACK_EVERY", 5)
    args = load.parse_args(
        [
            *("--url", server.http_url, "--ws", "4", "--sse", "3", "--warmup", "1"),
            *("--rate", "10", "--duration", "2", "--drain", "10", "--settle", "0.2"),
            *("--stream", "public:chat:load-test", "--server-pid", str(server.pid)),
        ]
    )
    report = await load.run(args)
    check_clean(report, ws=4, sse=3)
    assert report["publish"]["mode"] == "api"
    assert report["delivery"]["sse"]["gaps"] == 0
    conns = report["connections"]
    assert conns["sse_acknowledged"] > 0 and conns["sse_ack_errors"] == 0, conns
    (rss,) = report["servers"]
    assert rss["pid"] == server.pid
    assert all(rss[f"rss_{label}_kib"] > 0 for label in ("before", "warm", "held", "end")), rss
    assert report["rss"]["baseline"] == "warm" and report["rss"]["connections_measured"] == 5
    text = load.markdown(report)
    assert "| held at the end | 4 | 3 | 7 |" in text, text
    assert "KiB per connection" in text


async def test_naive_websocket_clients_with_direct_publishing(daphne_server: ServerFactory) -> None:
    server = daphne_server(app="bench.naive_asgi:application")
    args = load.parse_args(
        [
            *("--url", server.http_url, "--protocol", "naive", "--ws", "3", "--sse", "0"),
            *("--rate", "10", "--duration", "1.5", "--drain", "10", "--settle", "0.2"),
            *("--publish", "direct", "--stream", "public:load-test"),
        ]
    )
    report = await load.run(args)
    check_clean(report, ws=3, sse=0)
    assert report["publish"]["mode"] == "direct"
    assert report["servers"] == [] and report["rss"] == {}


def test_bounds_and_combinations_are_refused() -> None:
    for argv in (
        ["--ws", "0", "--sse", "0"],
        ["--ws", "30000"],
        ["--protocol", "naive", "--sse", "1"],
        ["--protocol", "naive", "--rate", "5"],  # the naive side has no REST API
    ):
        with pytest.raises(SystemExit):
            load.parse_args(["--url", "http://127.0.0.1:1", *argv])
