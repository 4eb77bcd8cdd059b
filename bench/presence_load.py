"""Database writes per second that presence liveness costs, with N present connections.

    .venv/bin/python -m bench.presence_load --clients 1000 --seconds 30

Starts one daphne (PostgreSQL from ``PG_DATABASE_URL`` or ``DATABASE_URL``, Redis from
``REDIS_URL``), opens N WebSocket connections on loopback that each join presence on one
stream and heartbeat every 15 s, waits until every member is present, then counts the rows
PostgreSQL inserted, updated and deleted, and the transactions it committed, over the
measuring window (``pg_stat_database``), and prints them per second. Bounded: every wait has
a timeout, every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import websockets

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def counters(dsn: str, database: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT tup_inserted + tup_updated + tup_deleted, xact_commit "
            "FROM pg_stat_database WHERE datname = %s",
            [database],
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def member(url: str, origin: str, n: int, stop: asyncio.Event, joined: list[int]) -> None:
    async with websockets.connect(
        url + f"?client_id=load-{n}", origin=origin, open_timeout=60, ping_interval=None
    ) as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream": "public:load", "presence": {}}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] in ("presence.state", "error"):
                break
        joined.append(n)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 15)
            except TimeoutError:
                await ws.send('{"type":"ping"}')


async def run(args: argparse.Namespace, port: int, server: subprocess.Popen[bytes]) -> None:
    dsn = args.database_url
    database = dsn.rsplit("/", 1)[-1].split("?")[0]
    stop = asyncio.Event()
    joined: list[int] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.sleep(2)
        url, origin = f"ws://127.0.0.1:{port}/realtime/ws/", f"http://127.0.0.1:{port}"
        print(f"opening {args.clients} present connections ...", flush=True)
        for n in range(args.clients):
            tasks.append(asyncio.create_task(member(url, origin, n, stop, joined)))
            if n % 20 == 19:
                await asyncio.sleep(0.1)  # 200 a second: daphne's listen backlog is 50
        async with asyncio.timeout(180):
            while len(joined) < args.clients:
                await asyncio.sleep(0.5)
                failed = [t for t in tasks if t.done() and t.exception() is not None]
                if failed:
                    raise SystemExit(f"{len(failed)} connections failed: {failed[0].exception()!r}")
                print(f"  {len(joined)}/{args.clients} present", end="\r", flush=True)
        print(f"\n{len(joined)} members present; measuring for {args.seconds} s ...", flush=True)
        await asyncio.sleep(args.settle)  # the joins' writes reach the statistics late
        rows_before, commits_before = counters(dsn, database)
        started = time.monotonic()
        await asyncio.sleep(args.seconds)
        rows_after, commits_after = counters(dsn, database)
        elapsed = time.monotonic() - started
        rows = (rows_after - rows_before) / elapsed
        commits = (commits_after - commits_before) / elapsed
        print(f"with {args.clients} present connections on one process:")
        print(f"  rows written per second:        {rows:.2f}")
        print(f"  transactions committed per s:   {commits:.2f}")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--settle", type=float, default=15)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PG_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="a PostgreSQL URL (its statistics count the writes)",
    )
    args = parser.parse_args()
    if not args.database_url or not args.database_url.startswith("postgres"):
        parser.error("give a PostgreSQL --database-url (or set PG_DATABASE_URL)")
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        # Leftovers of a previous run count until their lease expires: leave room.
        "REALTIME_MAX_CONNECTIONS_PER_IP": str(3 * args.clients + 100),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    log_path = os.environ.get("LOAD_LOG", os.devnull)
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "project.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        asyncio.run(run(args, port, server))


if __name__ == "__main__":
    main()
