"""The connection-storm tool (``bench.storm``), small enough for the suite, so it cannot rot.

It runs its own Redis, SQLite file and daphne processes: no test database is involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT


def run_storm(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    # Leases of 2 s: the stopped process's rows are swept within seconds, not half a minute.
    env["REALTIME_PRESENCE_TIMEOUT"] = "3"
    out = tmp_path / "storm.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.storm", "--json", str(out), "--timeout", "20", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result, json.loads(out.read_text())


def test_restart_every_client_is_admitted_and_gets_exactly_what_it_missed(
    tmp_path: Path,
) -> None:
    result, data = run_storm(
        tmp_path, "--clients", "50", "--modes", "anonymous,signed-in", "--signals", "term"
    )
    assert set(data["runs"]) == {"anonymous, SIGTERM", "signed-in, SIGTERM"}
    for run in data["runs"].values():
        assert run["admitted"] == 50 and not run["failures"]
        assert run["exact"] == 50 and not run["problems"]
        assert run["final_seq"] == 3 + 5 + 1  # before, while down, after
        assert run["caught_up_all_s"] is not None
        assert run["stale_rows_gone_s"] is not None  # the stopped process's rows were swept
        assert run["statements"] > 0 and run["server_errors"] == 0
    signed_in = data["runs"]["signed-in, SIGTERM"]["by_table"]
    assert "SELECT django_session" in signed_in
    assert "| got exactly the events they missed | 50 of 50 | 50 of 50 |" in result.stdout
    assert "reconnect within 1 s" in result.stderr  # progress goes to stderr


def test_burst_all_at_once(tmp_path: Path) -> None:
    _, data = run_storm(
        tmp_path, "--scenario", "burst", "--clients", "30", "--modes", "anonymous", "--hold", "0"
    )
    run = data["runs"]["anonymous"]
    assert run["open"] == 30 and not run["failures"]
    assert run["closed_all_s"] is not None
