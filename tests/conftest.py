"""Fixtures for the whole suite: real daphne processes on the test database and Redis.

Run the suite with ``make test``: it starts a private Redis (port 6399) and PostgreSQL and
runs pytest twice, on SQLite and on PostgreSQL, with ``REDIS_URL`` set. The session aborts
without ``REDIS_URL``: tests that need Redis are never silently skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from pytest_django import DjangoDbBlocker

from realtime.testing.pytest import remember
from tests.servers import Server


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_regex_imported() -> None:
    """Hypothesis imports its regex module on first use, and pytest rewrites its asserts with
    ast.parse. On Python 3.11 a parse that runs while other threads are busy (the app's
    sender and database threads; 3.11 also parses source lines to format a traceback) can
    fail with "AST constructor recursion depth mismatch" (python/cpython#106905, seen in CI
    in tests/e2e/test_schemas.py): import it before the first test starts those threads
    (not at conftest import: Hypothesis warns about work done there)."""
    import hypothesis.strategies._internal.regex  # noqa: F401


ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"

# The SQLite test database is a file in .run/, shared with the daphne subprocesses; sqlite
# cannot create it in a missing directory.
RUN_DIR.mkdir(exist_ok=True)


def _keep_this_process_collector() -> None:
    """The pytest process starts hubs too, but keeps its garbage collector as it is: freezing
    is for server processes (``realtime.gcpauses``), and tests here may watch objects go."""
    from realtime.core import gcpauses

    gcpauses._frozen_in = os.getpid()


_keep_this_process_collector()


def pytest_configure(config: pytest.Config) -> None:
    if config.option.help or config.option.version:
        return
    from django.conf import settings

    if not hasattr(settings, "TEST_SESSION"):
        pytest.exit(
            f"The tests run on tests.settings, not on {settings.SETTINGS_MODULE}: unset "
            "DJANGO_SETTINGS_MODULE (pyproject.toml names tests.settings) or set it to "
            "tests.settings.",
            returncode=2,
        )


TIERS = ("unit", "integration", "e2e")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``postgresql`` test on another database fails rather than skips: a skip would hide
    that it never ran. ``make test`` deselects them on SQLite (``-m "not postgresql"``)."""
    if item.get_closest_marker("postgresql") is None:
        return
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.fail(
            f"{item.nodeid} needs PostgreSQL: set DATABASE_URL to one (make test does, in its "
            'PostgreSQL pass), or deselect it with -m "not postgresql".',
            pytrace=False,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (its folder), and stop early if a tier that needs the
    services is collected without them.

    ``tests/unit`` needs nothing running; ``tests/integration`` runs in this process with
    real PostgreSQL or SQLite and Redis; ``tests/e2e`` adds daphne processes and Chromium.
    """
    for item in items:
        tier = Path(str(item.path)).relative_to(ROOT / "tests").parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    if not os.environ.get("REDIS_URL") and any(
        item.get_closest_marker("unit") is None for item in items
    ):
        pytest.exit(
            "REDIS_URL is not set. The integration and end-to-end tests need a real Redis "
            "and database, which `make test` provides: run `make test` (add "
            "PYTEST_ARGS='-k name' to select tests), or `make test-unit` for the tests that "
            "need nothing. To run pytest by hand: scripts/services.sh && set -a && "
            ". .run/services.env && set +a && .venv/bin/pytest ...",
            returncode=2,
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    django_db_blocker: DjangoDbBlocker,
) -> None:
    """Before creating the test databases, drop those that runs killed outright left behind.

    tests/settings.py names test databases after the pid of the run (SQLite
    ``.run/test-<pid>.sqlite3``, PostgreSQL ``test_<NAME>_<pid>``); one whose pid is gone
    belongs to no running session.
    """
    from django.db import connections

    for path in RUN_DIR.glob("test-*.sqlite3*"):
        match = re.fullmatch(r"test-(\d+)\.sqlite3(-wal|-shm|-journal)?", path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
    for alias in connections:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        pattern = re.compile(rf"test_{re.escape(connection.settings_dict['NAME'])}_(\d+)")
        with django_db_blocker.unblock(), connection._nodb_cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            for (name,) in cursor.fetchall():
                match = pattern.fullmatch(name)
                if match and not _pid_alive(int(match.group(1))):
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> Iterator[None]:
    """pytest-django's, plus: before the test databases are dropped, let go of them.

    PostgreSQL refuses to drop a database anyone is connected to, and connections outlive
    the tests: a pooled connection checked out by asgiref's executor thread (ORM calls from
    async tests) survives Django's ``close_pool()``. So close ours, then end what is left.
    """
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        connections.close_all()
        for alias in connections:
            connection = connections[alias]
            if connection.vendor != "postgresql":
                continue
            connection.close_pool()
            with connection._nodb_cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [connection.settings_dict["NAME"]],
                )


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server of this test session (the same one the daphne processes use)."""
    return os.environ["REDIS_URL"]


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    """This session's channels-redis key prefix (``tests/settings.py``)."""
    from django.conf import settings

    return str(settings.REDIS_PREFIX)


@pytest.fixture
def daphne_server(
    transactional_db: None, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """Start daphne processes on the test database; all are stopped after the test.

    ::

        def test_x(daphne_server):
            server = daphne_server()                                  # project.asgi
            fast = daphne_server({"REALTIME_HEARTBEAT_TIMEOUT": "1"})  # extra environment

    Each server is a separate process serving ``project.asgi:application`` on its own port,
    with the pytest process's settings, REDIS_URL and Redis prefix, so they exchange events
    through Redis like the processes of a real deployment. Its output is shown if the test
    fails.
    """
    servers: list[Server] = []

    def start(
        env: Mapping[str, str] | None = None,
        *,
        app: str | None = None,
        port: int | None = None,
        server: str = "daphne",
    ) -> Server:
        kwargs = {"app": app} if app else {}
        started = Server.start(log_dir=tmp_path, env=env, port=port, server=server, **kwargs)
        servers.append(started)
        remember(request.node, started)  # its output in a failed test's report
        return started

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def fresh_channel_layers() -> Iterator[None]:
    """A channel layer per test: each async test runs on an event loop of its own, and a
    channels-redis layer keeps locks and connections bound to the loop that first used it."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()
