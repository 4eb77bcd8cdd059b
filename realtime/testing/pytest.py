"""pytest fixtures for projects' tests; enable with ``pytest_plugins =
["realtime.testing.pytest"]`` in the top ``conftest.py`` (or ``-p realtime.testing.pytest``).

- ``realtime_live_server``: a ``python -m realtime.serve`` process on a free loopback port,
  on the test databases (needs real commits: it requests ``transactional_db``); stopped
  after the test, its output attached to a failed test's report.
- ``realtime_captured``: ``capture_published()`` around the whole test.
- ``realtime_channel_layers``: a fresh channel layer per test (a channels-redis layer is
  bound to the event loop that first used it, and each async test has its own).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Nothing that needs Django here at import: pytest loads plugins before Django is set up.
from realtime.testing.servers import LiveServer, Server

if TYPE_CHECKING:
    from realtime.testing.capture import CapturedEvents

_SERVERS = pytest.StashKey[list[Server]]()


def remember(node: pytest.Item, server: Server) -> None:
    """Attach ``server``'s output to ``node``'s report should the test fail (what
    ``realtime_live_server`` does; for fixtures of a project's own that start servers)."""
    node.stash.setdefault(_SERVERS, []).append(server)


@pytest.fixture
def realtime_live_server(
    transactional_db: None, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[LiveServer]:
    """A live server: ``.http_url``, ``.ws_url`` (``/realtime/ws/`` and ``/realtime/sse/``
    are under them), ``.log()``, ``.stop()``, ``.kill()``."""
    server = LiveServer.start(tmp_path)
    remember(request.node, server)
    yield server
    server.stop()


@pytest.fixture
def realtime_captured() -> Iterator[CapturedEvents]:
    """What the test published (``realtime.testing.capture_published``)."""
    from realtime.testing.capture import capture_published

    with capture_published() as captured:
        yield captured


@pytest.fixture
def realtime_channel_layers() -> Iterator[None]:
    """Channel layers made afresh for this test, and dropped after it."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach each server's output to the report of a failed test."""
    report = yield
    if report.failed:
        for server in item.stash.get(_SERVERS, []):
            title = f"Captured server :{server.port} (pid {server.pid}) output"
            report.sections.append((title, server.log()))
    return report
