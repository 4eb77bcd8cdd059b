"""The processes of ``bench.fanout``: starting, talking to, timing and stopping them.

Every child gets a log file in the run's temporary directory and is stopped here
(``terminate``, then ``kill`` after 5 s); ``PR_SET_PDEATHSIG`` has the kernel kill it should
the benchmark itself die. CPU use is read from ``/proc`` (Linux only, like the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
MIGRATE_TIMEOUT = 120.0


class BenchError(Exception):
    """A step of the benchmark could not be carried out."""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout: how the tools' child processes report to their parent."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def write_json(path: Path, result: Any, name: str = "") -> None:
    """Write a tool's results to ``path`` (its ``--json``), and say so on stderr."""
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"{name}: JSON written to {path}" if name else f"JSON written to {path}")


def run_tool(
    name: str,
    amain: Callable[[], Coroutine[Any, Any, int]],
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """A tool's exit status: ``amain()``'s, 1 (one line, no traceback) when a step could not
    be carried out, 130 when interrupted by Ctrl-C or SIGTERM (its processes are stopped)."""

    async def cancelled_by_sigterm() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await amain()

    try:
        return asyncio.run(cancelled_by_sigterm())
    except (BenchError, *errors) as exc:
        log(f"{name} failed: {exc}")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted")
        return 130


def check_bounds(
    parser: argparse.ArgumentParser, limits: list[tuple[float, float, float, str]]
) -> None:
    """Refuse options outside ``(value, low, high, name)``: every run's load is bounded."""
    for value, low, high, what in limits:
        if not low <= value <= high:
            parser.error(f"{what} must be between {low:g} and {high:g} (bounded load)")


def raise_fd_limit(connections: int) -> int:
    """Room for two sockets per connection (this process's, and daphne's, which inherits the
    limit; or an SSE client's stream and acknowledgements): raise the soft limit, or say why
    the run cannot work. Returns the limit now in force."""
    needed = 2 * connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise BenchError(
                f"{connections} connections need {needed} open files; the hard limit is "
                f"{hard} (ulimit -Hn): use fewer connections or raise it."
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_socket_timeout(url: str) -> str:
    """``url`` with a Redis socket timeout longer than channels-redis's 5 s BZPOPMIN.

    redis-py 8 reads with a 5 s socket timeout by default, the same as channels-redis's
    blocking receive, so a channel idle for 5 s raises ``TimeoutError`` in ``receive()``: a
    naive consumer dies with its connection (close 1011) and the app's hub logs and rejoins
    (redis/redis-py#4091, django/channels_redis#422). ``project.settings`` may set a timeout
    itself; this makes sure both sides run with one whatever the settings say, so the figures
    measure fan-out, not that bug. redis-py reads ``socket_timeout`` from the query string.
    """
    if "socket_timeout=" in url:
        return url
    return url + ("&" if "?" in url else "?") + "socket_timeout=30"


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    """A child process with its log file; ``control`` ones answer JSON lines on stdin/stdout."""

    def __init__(self, name: str, process: Any, logfile: Path) -> None:
        self.name, self.process, self.logfile = name, process, logfile

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text)

    async def read_json(self, within: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), within)
        except TimeoutError:
            raise BenchError(f"{self.name} did not answer in {within:g} s") from None
        if not line:
            await asyncio.sleep(0.2)
            raise BenchError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")
        return dict(json.loads(line))

    async def request(self, command: dict[str, Any], within: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read_json(within)


class _ThisProcess:
    pid = os.getpid()


THIS_PROCESS = Proc("bench", _ThisProcess(), Path(os.devnull))  # for the CPU accounting


class Processes:
    """Starts children with one environment and log directory, and stops every one of them."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.running: list[Proc] = []
        self.redis: Proc | None = None
        self.nats: Proc | None = None
        self.cluster: list[Proc] = []
        self.redis_version = "-"

    async def spawn(
        self, name: str, *argv: str, control: bool = False, env: dict[str, str] | None = None
    ) -> Proc:
        """Start ``argv`` (with ``env`` over the bench's environment)."""
        logfile = self.tmp / f"{name}.log"
        with logfile.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=BASE_DIR,
                env={**self.env, **(env or {})},
                stdin=asyncio.subprocess.PIPE if control else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if control else out,
                stderr=out,
                preexec_fn=_die_with_parent,
                limit=1 << 24,
            )
        proc = Proc(name, process, logfile)
        self.running.append(proc)
        return proc

    async def stop(self, procs: list[Proc]) -> None:
        for proc in procs:
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.kill()
                await proc.process.wait()
            if proc in self.running:
                self.running.remove(proc)

    async def stop_all(self) -> None:
        """Last started first, each gone before the next is told: a server still closing its
        connections keeps the Redis it was started with."""
        for proc in list(reversed(self.running)):
            await self.stop([proc])

    async def wait_listening(self, proc: Proc, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.process.returncode is not None:
                raise BenchError(f"{proc.name} exited at start-up:\n{proc.tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return
        raise BenchError(f"{proc.name} is not listening on {port} after {START_TIMEOUT:g} s")

    async def start_redis(self) -> None:
        """Our own memory-only Redis; without ``redis-server``, ``REDIS_URL`` with a prefix."""
        binary = shutil.which("redis-server")
        if binary is None:
            url = os.environ.get("REDIS_URL")
            if not url:
                raise BenchError("no redis-server on PATH and no REDIS_URL to fall back on")
            log(f"redis-server not found: using REDIS_URL {url} with a private key prefix")
            self.env.update(REDIS_URL=with_socket_timeout(url), REDIS_PREFIX=f"bench{os.getpid()}")
            return
        port = free_port()
        self.redis = await self.spawn(
            "redis",
            *(binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""),
            *("--appendonly", "no", "--dir", str(self.tmp)),
        )
        await self.wait_listening(self.redis, port)
        self.env["REDIS_URL"] = with_socket_timeout(f"redis://127.0.0.1:{port}/0")
        version = await asyncio.create_subprocess_exec(
            binary, "--version", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(version.communicate(), 10)
        words = out.decode().split()
        self.redis_version = next((w[2:] for w in words if w.startswith("v=")), "-")

    async def start_nats(self) -> str:
        """Our own nats-server (core NATS, no JetStream) on a free port; returns its URL."""
        # Debian installs it in /usr/sbin, which is not on every PATH.
        binary = shutil.which("nats-server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
        if binary is None:
            raise BenchError("no nats-server installed (scripts/services.sh nats installs it)")
        port = free_port()
        self.nats = await self.spawn("nats", binary, "-a", "127.0.0.1", "-p", str(port))
        await self.wait_listening(self.nats, port)
        return f"nats://127.0.0.1:{port}"

    async def start_redis_cluster(self, nodes: int = 3) -> str:
        """Our own Redis Cluster (``nodes`` primaries, no replicas, memory only) on free
        ports; returns its ``redis-cluster://`` URL."""
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise BenchError("no redis-server or redis-cli on PATH for a Redis Cluster")
        ports: list[int] = []
        while len(ports) < nodes:  # the cluster bus listens on port + 10000
            port = free_port()
            if port < 55000 and port not in ports:
                ports.append(port)
        for port in ports:
            folder = self.tmp / f"cluster-{port}"
            folder.mkdir()
            proc = await self.spawn(
                f"cluster-{port}",
                *(binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""),
                *("--appendonly", "no", "--dir", str(folder), "--cluster-enabled", "yes"),
            )
            self.cluster.append(proc)
            await self.wait_listening(proc, port)
        create = await asyncio.create_subprocess_exec(
            cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await asyncio.wait_for(create.wait(), 30) != 0:
            raise BenchError("redis-cli --cluster create failed")
        for _ in range(200):
            info = await asyncio.create_subprocess_exec(
                cli, "-p", str(ports[-1]), "cluster", "info", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(info.communicate(), 10)
            if b"cluster_state:ok" in out:
                return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
            await asyncio.sleep(0.1)
        raise BenchError("the Redis Cluster did not become ready within 20 s")

    async def migrate(self) -> None:
        log("migrating the benchmark database...")
        proc = await self.spawn(
            "migrate", sys.executable, "manage.py", "migrate", "--noinput", "--skip-checks"
        )
        try:
            code = await asyncio.wait_for(proc.process.wait(), MIGRATE_TIMEOUT)
        except TimeoutError:
            raise BenchError(f"manage.py migrate took over {MIGRATE_TIMEOUT:g} s") from None
        finally:
            await self.stop([proc])
        if code != 0:
            raise BenchError(f"manage.py migrate failed ({code}):\n{proc.tail()}")


class ScratchPostgres:
    """A database of its own on a PostgreSQL server, for one run: made, then dropped.

    ``server_url`` names the server (any database on it, to connect to); the scratch one is
    ``<prefix>_<pid>``. Loopback servers only, like everything the tools touch.
    """

    def __init__(self, server_url: str, prefix: str) -> None:
        if urlsplit(server_url).hostname not in {"127.0.0.1", "localhost", "::1"}:
            raise BenchError(f"{server_url}: only a PostgreSQL server on loopback is used")
        self.server_url = server_url
        self.name = f"{prefix}_{os.getpid()}"
        self.url = urlsplit(server_url)._replace(path=f"/{self.name}").geturl()
        self.created = False

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as pg:
            pg.execute(sql)

    def create(self) -> str:
        """Create the database; its URL. BenchError (one line) if the server is unreachable."""
        try:
            self._admin(f"CREATE DATABASE {self.name}")
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BenchError(f"PostgreSQL at {self.server_url} is unreachable: {first}") from None
        self.created = True
        return self.url

    def drop(self) -> None:
        if not self.created:
            return
        try:
            self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
            self.created = False
        except Exception as exc:
            log(f"could not drop {self.name}: {exc}")


# --- CPU accounting from /proc ----------------------------------------------------------------
def _ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine_busy() -> int:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]  # guest time is in user
    return sum(values) - values[3] - values[4]  # all but idle and iowait


def cpu_sample(roles: dict[str, Proc]) -> dict[str, Any]:
    sample: dict[str, Any] = {name: _ticks(p.pid) for name, p in roles.items()}
    sample["machine"] = _machine_busy()
    sample["at"] = time.monotonic()
    return sample


def cpu_pct(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """CPU of each role between two samples, in % of one core, plus ``machine`` and ``other``."""
    seconds = max(after["at"] - before["at"], 1e-6)
    hz = os.sysconf("SC_CLK_TCK")
    pct = {k: round((after[k] - before[k]) / hz / seconds * 100, 1) for k in before if k != "at"}
    # Whatever the machine spent outside our processes: kernel work not charged to them
    # (loopback networking in softirq) and any other tenant of the machine.
    pct["other"] = round(max(0.0, 2 * pct["machine"] - sum(pct.values())), 1)
    return pct


async def background_load() -> float:
    """CPU % (of one core) the machine spends over one second, e.g. while we are idle."""
    before, at = _machine_busy(), time.monotonic()
    await asyncio.sleep(1.0)
    ticks, seconds = _machine_busy() - before, time.monotonic() - at
    return round(ticks / os.sysconf("SC_CLK_TCK") / seconds * 100, 1)
