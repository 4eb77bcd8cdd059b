"""A server process freezes its startup heap out of the collector's full passes, once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings

from tests.e2e.test_websocket import WS_PATH
from tests.servers import WSClient, server_env, settings_env

pytestmark = pytest.mark.django_db(transaction=True)

FREEZER = """
import gc, os, django
django.setup()
from realtime.core import gcpauses
assert gc.get_freeze_count() == 0
assert gc.get_threshold() == (700, 10, 10)  # CPython's default
assert gcpauses.freeze_startup_heap() is True
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen  # Django and the app: a large, permanent heap
assert gc.get_threshold() == (gcpauses.YOUNG_THRESHOLD, 10, 10)
gc.set_threshold(50_000, 10, 10)  # a project's own choice, if higher, is kept
assert gcpauses.freeze_startup_heap() is False  # once per process
if pid := os.fork():  # a forked child is a process of its own: it freezes once more
    os._exit(os.waitpid(pid, 0)[1] >> 8)
assert gcpauses.freeze_startup_heap() is True
assert gc.get_threshold() == (50_000, 10, 10)
print("ok", frozen)
"""


def test_the_heap_is_frozen_once_per_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FREEZER],
        env=server_env(), cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


@pytest.mark.parametrize("freeze", [True, False])
async def test_a_server_freezes_when_its_hub_starts_unless_told_not_to(
    daphne_server: Any, freeze: bool
) -> None:
    server = daphne_server(settings_env({"GC_FREEZE": freeze}))
    assert "Froze" not in server.log()  # not at import: when the hub starts
    async with WSClient(server.ws_url + WS_PATH) as client:
        assert (await client.recv_json())["type"] == "welcome"  # the hub has started
    for _ in range(30):
        if "Froze" in server.log():
            break
        await asyncio.sleep(0.1)
    assert ("out of the garbage collector's full passes" in server.log()) is freeze
