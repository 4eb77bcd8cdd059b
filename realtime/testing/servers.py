"""Server processes for tests: ``python -m realtime.serve`` on a free loopback port, on the
test database.

A ``LiveServer`` is a real daphne process with the real hub, serving the project's ASGI
application against the databases of the running tests (``realtime.testing.serve`` points
the child's settings at them) and the same channel layer settings, so events published by
the test process reach its subscribers. The databases must be committed to be seen: use it
from tests with real commits (``transactional_db``, ``TransactionTestCase``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

# The environment variable carrying the test databases to the child (``realtime.testing.serve``).
DATABASES_ENV = "REALTIME_TEST_DATABASES"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerError(RuntimeError):
    """A server process did not start (the message includes its output)."""


@dataclass
class Server:
    """One server process in its own process group, its output in ``log_path``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would, and reap it."""
        self._signal(signal.SIGKILL)
        self._reap(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, without waiting: the start of a deploy (``realtime.serve`` drains)."""
        self._signal(signal.SIGTERM)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (daphne shuts down gracefully), then SIGKILL after ``timeout`` seconds."""
        if not self.running:
            self._reap(timeout=1)
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        else:
            # Anything the process started in its group goes too.
            self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def _reap(self, timeout: float) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"server pid {self.pid} did not exit after SIGKILL") from exc

    @classmethod
    def launch(
        cls,
        command: Callable[[int], list[str]],
        *,
        env: Mapping[str, str],
        log_dir: Path,
        name: str = "server",
        port: int | None = None,
        ready_timeout: float = 20,
        cwd: Path | None = None,
    ) -> Self:
        """Run ``command(port)`` on a free port (or on ``port``, e.g. to restart a killed
        server on its old address); return once the port accepts connections."""
        wanted = port
        for attempt in range(3):
            port = wanted or free_port()
            log_path = log_dir / f"{name}-{port}.log"
            restarts = 1
            while log_path.exists():  # a restart on the same port keeps the old log
                restarts += 1
                log_path = log_dir / f"{name}-{port}-{restarts}.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    command(port),
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: kill() takes all of it
                )
            server = cls(process=process, port=port, log_path=log_path, env=dict(env))
            try:
                server._wait_ready(ready_timeout)
                return server
            except ServerError:
                server.kill()
                # Another process took the port between free_port() and the bind (or, for a
                # given port, the killed process's socket is not released yet).
                if "Address already in use" in server.log() and attempt < 2:
                    time.sleep(0.5 if wanted else 0)
                    continue
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServerError(
                    f"the server exited with code {self.process.returncode} before listening "
                    f"on port {self.port}. Its output:\n{self.log()}"
                )
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise ServerError(
            f"the server did not listen on port {self.port} within {timeout:g} s. Its "
            f"output:\n{self.log()}"
        )


def test_databases() -> dict[str, dict[str, Any]]:
    """The ``DATABASES`` of this process as they are now: during tests, the test databases."""
    from django.db import connections

    found = {}
    for alias in connections:
        settings_dict = dict(connections[alias].settings_dict)
        if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
            name = str(settings_dict["NAME"])
            if name == ":memory:" or "mode=memory" in name:
                raise ServerError(
                    f"A server process cannot share the in-memory SQLite database {alias!r}: "
                    "name a file in DATABASES[...]['TEST']['NAME']."
                )
        found[alias] = {k: v for k, v in settings_dict.items() if _jsonable(v)}
    return found


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass
class LiveServer(Server):
    """``python -m realtime.serve`` serving the project's ASGI application."""

    @classmethod
    def start(
        cls,
        log_dir: Path,
        *,
        application: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        ready_timeout: float = 20,
    ) -> Self:
        """Start a server on the test databases with this process's settings module;
        ``application`` is a dotted path (``ASGI_APPLICATION`` by default), ``env`` is added
        to this process's environment."""
        from django.conf import settings

        app = application or _asgi_path(getattr(settings, "ASGI_APPLICATION", None))
        full_env = dict(os.environ)
        full_env.pop("PYTEST_CURRENT_TEST", None)
        full_env.update(
            DJANGO_SETTINGS_MODULE=str(settings.SETTINGS_MODULE),
            PYTHONUNBUFFERED="1",
            **{DATABASES_ENV: json.dumps(test_databases())},
        )
        full_env.update(env or {})

        def command(port: int) -> list[str]:
            return [
                sys.executable,
                *("-m", "realtime.testing.serve", "-b", "127.0.0.1", "-p", str(port), app),
            ]

        return cls.launch(
            command,
            env=full_env,
            log_dir=log_dir,
            name="realtime-serve",
            port=port,
            ready_timeout=ready_timeout,
            cwd=Path.cwd(),
        )


def _asgi_path(setting: str | None) -> str:
    """``"project.asgi.application"`` as daphne takes it: ``"project.asgi:application"``."""
    if not setting:
        raise ServerError("Set ASGI_APPLICATION, or pass the application's dotted path.")
    module, _, name = setting.rpartition(".")
    return f"{module}:{name}"
