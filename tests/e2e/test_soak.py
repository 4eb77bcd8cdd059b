"""The soak (``bench.soak``), short: hostile anonymous churn leaves nothing that grows.

Issue 12: one anonymous client subscribing to never-published ``public:`` streams, joining
their presence, leaving and unsubscribing left three rows per stream behind (``Stream``,
``PresenceMember``, ``PresenceSession``). Here four clients churn for 20 s against two real
daphne processes (Redis between them) through the same code as ``make soak``, on a database
of the tool's own: SQLite, or a new database on the PostgreSQL server of the run on
PostgreSQL. The figures are in the report the tool prints, shown when an assertion fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ROOT

CLIENTS = 4
SERVERS = 2
SLACK = 2 * CLIENTS + 10  # the tool's default --row-slack, stated here
RSS_LIMIT_MIB = 16.0  # loose: a 10 s half of a short run on a busy machine


def run_soak(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    database = os.environ.get("DATABASE_URL", "")
    if database.startswith("postgres"):
        args = (*args, "--database-url", database)  # a database of its own on that server
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--json", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert out.exists(), f"no report (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return result, json.loads(out.read_text())


@pytest.mark.timeout(180)
def test_anonymous_churn_on_never_published_streams_plateaus(tmp_path: Path) -> None:
    result, report = run_soak(
        tmp_path,
        *("--clients", str(CLIENTS), "--servers", str(SERVERS)),
        *("--duration", "20", "--interval", "5", "--reconnect-every", "5"),
        *("--rss-limit", str(RSS_LIMIT_MIB)),
    )
    # Shown when the test fails: the Markdown table (rows per table, MiB per server), then
    # the end of the progress log.
    print(result.stdout, result.stderr[-2000:], sep="\n")
    samples = report["samples"]
    before, during, after = samples[0], samples[1:-1], samples[-1]
    assert [s["t"] for s in during] == [5, 10, 15, 20]
    tables = report["tables"]
    assert {"Stream", "PresenceMember", "Presence", "PresenceSession", "Connection"} <= set(tables)

    # The churn happened, as documented clients may do it: nothing refused, nothing broken.
    churn = report["churn"]
    assert churn["cycles"] >= 5 * CLIENTS, churn
    assert churn["reconnects"] >= CLIENTS and churn["cut_short"] >= 1, churn
    assert churn["errors"] == {}, churn  # under RATE_LIMIT: no rate_limited, no other error
    assert churn["failures"] == {}, churn
    assert report["server_errors"] == [], report["server_errors"]

    # Rows plateau: after the first interval no table of the realtime app grows by more than
    # what the clients hold open at once...
    first = during[0]["rows"]
    for sample in during[1:]:
        for table in tables:
            growth = sample["rows"][table] - first[table]
            assert growth <= SLACK, f"{table} grew by {growth} rows from 5 s to {sample['label']}"
    # ... and never-published streams do not accumulate: at most one per client (the one it
    # is subscribed to right now), however many it went through.
    assert all(s["rows"]["Stream"] <= CLIENTS for s in during), [s["rows"] for s in during]

    # Nothing outlives the connections: once every client closed (and PRESENCE_GRACE passed),
    # every table is as before the first client, but one Server row per running process.
    expected = {**before["rows"], "Server": SERVERS}
    assert after["rows"] == expected, f"left behind: {after['rows']} instead of {expected}"

    # Memory plateaus too: no server's RSS grows by more than RSS_LIMIT_MIB in the second half.
    half = next(s for s in during if s["t"] >= 10)
    for server, (start, end) in enumerate(
        zip(half["rss_mib"], during[-1]["rss_mib"], strict=True), start=1
    ):
        assert start is not None and end is not None, f"server {server} has no RSS reading"
        assert end - start <= RSS_LIMIT_MIB, f"server {server}: {start} -> {end} MiB"

    # The tool's own verdict agrees, and says so in its exit status.
    assert report["verdict"]["ok"] and result.returncode == 0, report["verdict"]
    assert "| after | cycles | Stream |" in result.stdout
    assert "Verdict: **PASS**" in result.stdout
    assert "[    5 s]" in result.stderr  # progress, every interval, on stderr


def test_bounds_are_refused() -> None:
    from bench import soak

    for argv in (
        ["--clients", "0"],
        ["--clients", "10000"],
        ["--servers", "9"],
        ["--duration", "7200"],
        ["--duration", "10", "--interval", "5"],  # fewer than three samples
        ["--frame-rate", "0"],
    ):
        with pytest.raises(SystemExit):
            soak.parse_args(argv)
    args = soak.parse_args([])
    assert args.duration >= 60 and args.interval == 10 and args.warmup == 10  # make soak


def test_sample_times_end_at_the_duration() -> None:
    from bench.soak import sample_times

    assert sample_times(60, 10) == [10, 20, 30, 40, 50, 60]
    assert sample_times(25, 10) == [10, 20, 25]
