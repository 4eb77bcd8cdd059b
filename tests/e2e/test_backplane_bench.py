"""``bench.backplane`` in miniature, so the tool behind docs/deployment.md's capacity figures
cannot rot: each backplane on servers of the tool's own, both ways of sending, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_backplanes import MISSING

BACKPLANES = ["channels", "nats", "redis-cluster"]


def test_the_backplane_tool_runs(tmp_path: Path) -> None:
    missing = [name for name, absent in MISSING.items() if absent]
    if missing:
        pytest.fail(f"{', '.join(missing)}: its server is not installed (`make test` installs it)")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the tool's processes use project.settings
    argv = ["--messages", "500", "--repeats", "1", "--receivers", "1", "--groups", "5"]
    out = subprocess.run(
        [sys.executable, "-m", "bench.backplane", *argv, "--json", str(tmp_path / "r.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| backplane | mode |"), out.stdout
    assert len(rows[1:]) == 2 * len(BACKPLANES), out.stdout
    for row in rows[1:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] in BACKPLANES and cells[4] == "0", row  # lost
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert {(r["backplane"], r["mode"]) for r in runs} == {
        (b, m) for b in BACKPLANES for m in ("one", "many")
    }
    for run in runs:
        assert run["delivered"] == run["expected"] == 500, run
        assert run["lost"] == run["out_of_order"] == run["send_errors"] == 0, run
