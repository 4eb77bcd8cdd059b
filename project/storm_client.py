"""The clients of ``project.storm``: many WebSocket connections opened at the same instant."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any


class Clients:
    """``--clients`` WebSocket clients opened at the same instant."""

    def __init__(self, url: str, args: argparse.Namespace, cookies: list[str | None]) -> None:
        self.url, self.args, self.cookies = url, args, cookies
        self.sockets: list[Any] = []
        self.welcomes: list[float] = []
        self.subscribed: list[float] = []
        self.failures: list[str] = []
        self.last_welcome = self.last_subscribed = 0.0
        self._pinger: asyncio.Task[None] | None = None

    @property
    def open_count(self) -> int:
        return len(self.sockets)

    async def open_all(self) -> None:
        go = asyncio.Event()
        tasks = [asyncio.create_task(self.open_one(i, go)) for i in range(len(self.cookies))]
        await asyncio.sleep(0.05)  # every task waits at the gate
        go.set()
        await asyncio.gather(*tasks)
        self._pinger = asyncio.create_task(self.ping())

    async def open_one(self, index: int, go: asyncio.Event) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        headers = {"Cookie": self.cookies[index]} if self.cookies[index] else None
        await go.wait()
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.args.timeout):
                ws = await connect(
                    self.url,
                    additional_headers=headers,
                    open_timeout=None,
                    ping_interval=None,
                    compression=None,
                )
                welcome = json.loads(await ws.recv())
                assert welcome["type"] == "welcome", welcome
                now = time.perf_counter()
                self.welcomes.append(now - began)
                self.last_welcome = max(self.last_welcome, now)
                self.sockets.append(ws)
                if self.args.subscribe:
                    frame = {"type": "subscribe", "stream": self.args.stream, "since": 0}
                    await ws.send(json.dumps(frame))
                    reply = json.loads(await ws.recv())
                    assert reply["type"] == "subscribed", reply
                    now = time.perf_counter()
                    self.subscribed.append(now - began)
                    self.last_subscribed = max(self.last_subscribed, now)
        except InvalidStatus as exc:
            self.failures.append(f"HTTP {exc.response.status_code}")
        except TimeoutError:
            self.failures.append("timeout")
        except Exception as exc:
            self.failures.append(type(exc).__name__)

    async def open_all_and_close(self) -> None:
        await self.open_all()
        if self.failures:
            raise RuntimeError(f"the warm-up connection failed: {self.failures}")
        await self.close_all()

    async def ping(self) -> None:
        """Heartbeats, so a slow storm does not close its first clients (4408)."""
        while True:
            await asyncio.sleep(10)
            for ws in list(self.sockets):
                with contextlib.suppress(Exception):
                    await ws.send('{"type":"ping"}')

    async def close_all(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
