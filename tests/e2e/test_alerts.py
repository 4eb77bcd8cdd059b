"""Alert thresholds on a real server: crossing one logs a WARNING, fires ``alert_raised``
once and shows on the dashboard and in the metrics; coming back under fires
``alert_cleared`` once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from tests.servers import Server, WSClient, settings_env

ServerFactory = Callable[..., Server]
TOKEN = "metrics-token-" + "y" * 32


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_an_alert_fires_shows_and_clears(
    daphne_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "signals.jsonl"
    overrides = {
        "ALERTS": {"connections_per_process": 0},
        "STATS_INTERVAL": 0.2,
        "RECONCILE_INTERVAL": 0.2,  # the maintenance loop, which runs the stats tick
        "METRICS_TOKEN": TOKEN,
    }
    server = daphne_server(settings_env(overrides, REALTIME_TEST_SIGNAL_LOG=str(log)))

    def alerts(signal: str) -> list[dict[str, Any]]:
        return [e for e in read_log(log) if e["signal"] == signal]

    def staff_cookie() -> str:
        client = Client()
        client.force_login(
            get_user_model().objects.create_user(
                "ops", password="x", is_staff=True, is_superuser=True
            )
        )
        return client.cookies["sessionid"].value

    cookie = await sync_to_async(staff_cookie)()
    async with httpx.AsyncClient(
        base_url=server.http_url, timeout=10, cookies={"sessionid": cookie}
    ) as http:
        async with WSClient(server.ws_url + "/realtime/ws/") as ws:
            await ws.recv_until(lambda f: f["type"] == "welcome")
            await wait_for(lambda: bool(alerts("alert_raised")), "alert_raised")
            raised = alerts("alert_raised")
            assert len(raised) == 1
            assert raised[0]["name"] == "connections_per_process"
            assert (raised[0]["value"], raised[0]["threshold"]) == (1.0, 0)
            assert raised[0]["pid"] == server.pid
            assert "WARNING realtime.alerts: Alert connections_per_process" in server.log()

            # Shown on the dashboard and in the metrics while it lasts.
            data = (await http.get("/admin/realtime/connection/dashboard/data/")).json()
            assert [a["name"] for a in data["alerts"]] == ["connections_per_process"]
            page = await http.get("/admin/realtime/connection/dashboard/")
            assert "connections_per_process" in page.text
            metrics = await http.get(
                "/realtime/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert 'realtime_alert_active{alert="connections_per_process"' in metrics.text
            await asyncio.sleep(0.6)  # several ticks over the threshold: still one signal
            assert len(alerts("alert_raised")) == 1

        await wait_for(lambda: bool(alerts("alert_cleared")), "alert_cleared")
        cleared = alerts("alert_cleared")
        assert len(cleared) == 1 and cleared[0]["name"] == "connections_per_process"
        assert cleared[0]["value"] == 0.0
        assert "Alert connections_per_process cleared" in server.log()
        data = (await http.get("/admin/realtime/connection/dashboard/data/")).json()
        assert data["alerts"] == []
