"""System checks for the foot-guns of running live streams under Django."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

# redis-py 8's read timeout when none is given, and channels-redis's blocking receive.
_REDIS_READ_TIMEOUT = 5


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from realtime.conf import SettingError, realtime_settings
    from realtime.core import policy
    from realtime.storage import retention

    errors: list[Any] = []
    alias: str | None = "default"
    try:
        realtime_settings.reload()  # and what is parsed from it (retention and policy rules)
        realtime_settings.validate()  # every key's type and shape; imports the dotted paths
        alias = realtime_settings.CHANNEL_LAYER
        if realtime_settings.BACKPLANE is not None:
            from realtime.bus import backplane

            backplane()  # its client library installed, its URL parsed
            alias = None  # the channel layer is not used
        retention.rules()
        retention.presence_history()
        if issubclass(realtime_settings.POLICY, policy.RulesPolicy):
            policy.rules()
        from realtime.api.authentication import api_tokens

        api_tokens()  # the REST API's server tokens: a list of long strings
        # Imports daphne.server, as daphne's own AppConfig (INSTALLED_APPS) already does.
        from realtime.endpoints.serve import max_frame_size

        max_frame_size()  # a positive int: realtime.serve gives it to daphne as its limit
    except ImproperlyConfigured as exc:
        where = f"{exc.key} in docs/settings.md" if isinstance(exc, SettingError) else None
        hint = f"See {where or 'docs/settings.md'}."
        errors.append(Error(str(exc), hint=hint, id="realtime.E001"))
    else:
        errors += _check_runserver_limits()
    errors += _check_sqlite()
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if alias is not None and alias not in layers:
        errors.append(
            Error(
                f"CHANNEL_LAYERS has no {alias!r} layer; realtime fans out through it.",
                hint="Add channels_redis.core.RedisChannelLayer (production) or "
                "channels.layers.InMemoryChannelLayer (one process only).",
                id="realtime.E002",
            )
        )
    return errors


@register(Tags.compatibility, deploy=True)
def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    warnings: list[Any] = []
    from realtime.conf import realtime_settings
    from realtime.core.policy import PublicPolicy, RulesPolicy

    try:
        # With a backplane of its own the app does not use the channel layer.
        alias = realtime_settings.CHANNEL_LAYER if realtime_settings.BACKPLANE is None else ""
        policy = realtime_settings.POLICY
        origins = realtime_settings.ALLOWED_ORIGINS
        rules = realtime_settings.RULES if issubclass(policy, RulesPolicy) else {}
    except ImproperlyConfigured:
        return warnings  # check_settings reports it
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    backend = layers.get(alias, {}).get("BACKEND", "")
    if backend.endswith("InMemoryChannelLayer"):
        warnings.append(
            Warning(
                "The in-memory channel layer only reaches connections of its own process.",
                hint="Run one server process, or use channels_redis.core.RedisChannelLayer.",
                id="realtime.W001",
            )
        )
    for alias_name, db in settings.DATABASES.items():
        if db.get("CONN_MAX_AGE", 0) != 0:
            warnings.append(
                Warning(
                    f"DATABASES[{alias_name!r}] sets CONN_MAX_AGE; under ASGI persistent "
                    "connections leak (Django advises against them).",
                    hint="Set CONN_MAX_AGE = 0; on PostgreSQL use OPTIONS['pool'] instead.",
                    id="realtime.W002",
                )
            )
    warnings += _check_redis_timeouts(layers.get(alias, {}))
    if origins is not None and "*" in origins:
        warnings.append(
            Warning(
                "REALTIME['ALLOWED_ORIGINS'] allows any origin: any web site a signed-in user "
                "visits can open a WebSocket with their cookies (cross-site WebSocket hijacking).",
                hint="List your sites' origins, or leave it None to follow ALLOWED_HOSTS.",
                id="realtime.W004",
            )
        )
    if issubclass(policy, PublicPolicy):
        warnings.append(
            Warning(
                "PublicPolicy lets anyone publish from a client to every public: stream.",
                hint="Use the default RulesPolicy with REALTIME['RULES'] in production.",
                id="realtime.W005",
            )
        )
    if isinstance(rules, dict) and rules.get("*") == "public":
        warnings.append(
            Warning(
                "REALTIME['RULES'] makes every stream readable by anyone, signed in or not.",
                hint="Give '*' a narrower rule, or name the public streams 'public:...'.",
                id="realtime.W006",
            )
        )
    warnings += _check_daphne_version()
    if any("GZipMiddleware" in m for m in getattr(settings, "MIDDLEWARE", [])):
        warnings.append(
            Warning(
                "GZipMiddleware buffers streaming responses.",
                hint="The realtime SSE endpoint is routed before Django and is not affected; "
                "do not stream events through Django views behind GZip.",
                id="realtime.W003",
            )
        )
    return warnings


def _check_sqlite() -> list[Any]:
    """SQLite's defaults make publishers and the servers' own writes wait for each other.

    In rollback-journal mode a writer blocks every reader; in a deferred transaction two
    writers that both read first cannot both upgrade, and one fails at once with "database is
    locked" whatever the timeout. WAL lets readers run beside the writer, and ``IMMEDIATE``
    takes the write lock up front, waiting up to ``timeout`` for it.
    """
    warnings: list[Any] = []
    for alias, db in settings.DATABASES.items():
        if not db.get("ENGINE", "").endswith("sqlite3"):
            continue
        options = db.get("OPTIONS", {}) or {}
        wal = "journal_mode=wal" in str(options.get("init_command", "")).lower().replace(" ", "")
        if not wal or str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            warnings.append(
                Warning(
                    f"DATABASES[{alias!r}] is SQLite without WAL and IMMEDIATE transactions: "
                    "publishers and the servers' bookkeeping block each other, and concurrent "
                    "writes can fail with 'database is locked'.",
                    hint="Set OPTIONS = {'init_command': 'PRAGMA journal_mode=WAL; PRAGMA "
                    "synchronous=NORMAL;', 'transaction_mode': 'IMMEDIATE', 'timeout': 20} "
                    "(docs/deployment.md).",
                    id="realtime.W010",
                )
            )
    return warnings


def _check_runserver_limits() -> list[Any]:
    """``manage.py runserver`` (daphne's) takes its WebSocket limits from two settings, 1 MiB
    each when unset, and drops the connection (1006) on a message over them;
    ``python -m realtime.serve`` follows ``MAX_FRAME_SIZE`` by itself and closes with 1009.
    Unset limits above ``MAX_FRAME_SIZE`` are the development default and pass."""
    from realtime.endpoints.serve import DAPHNE_DEFAULT_LIMIT, max_frame_size

    limit = max_frame_size()
    found = []
    for name in ("DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE", "DAPHNE_WEBSOCKET_MAX_FRAME_SIZE"):
        value = getattr(settings, name, None)
        if value is None:
            if limit > DAPHNE_DEFAULT_LIMIT:
                found.append(f"{name} (unset: {DAPHNE_DEFAULT_LIMIT}) is below it")
        elif not isinstance(value, int):
            continue  # daphne itself refuses it
        elif 0 < value < limit:
            found.append(f"{name} = {value} is below it")
        elif value == 0:
            found.append(f"{name} = 0 sets no limit")
        elif value > limit:
            found.append(f"{name} = {value} is above it")
    if not found:
        return []
    return [
        Warning(
            f"REALTIME['MAX_FRAME_SIZE'] is {limit} bytes, but {'; '.join(found)}. runserver "
            "drops the connection (1006) on a message over its limit, and reads one up to its "
            "limit into memory before the app refuses it (frame_too_large).",
            hint="Give both DAPHNE_WEBSOCKET_* settings MAX_FRAME_SIZE's value (or leave them "
            "out while it is at most 1 MiB); serve with `python -m realtime.serve`, whose "
            "limit follows MAX_FRAME_SIZE (docs/deployment.md).",
            id="realtime.W008",
        )
    ]


def _check_daphne_version() -> list[Any]:
    """daphne before 4.2.2 gives autobahn no size limit, so messages are unlimited."""
    from realtime.endpoints.serve import DAPHNE_WITH_LIMITS, daphne_version

    version = daphne_version()
    if version >= DAPHNE_WITH_LIMITS:
        return []
    return [
        Warning(
            f"daphne {'.'.join(map(str, version))} sets no WebSocket message size limit: a "
            "client can make a server read a message of any size into memory "
            "(CVE-2026-44545), and `python -m realtime.serve` refuses to run on it.",
            hint=f"Upgrade daphne to {'.'.join(map(str, DAPHNE_WITH_LIMITS))} or later.",
            id="realtime.W009",
        )
    ]


def _check_redis_timeouts(layer: dict[str, Any]) -> list[Any]:
    """redis-py 8 times out socket reads after 5 s, which channels-redis's blocking receive
    (also 5 s) trips over, losing messages (django/channels_redis#422)."""
    if not layer.get("BACKEND", "").startswith("channels_redis.core."):
        return []
    try:
        import redis

        major = int(redis.__version__.split(".")[0])
    except (ImportError, ValueError):
        return []
    if major < 8:
        return []

    short = [host for host in layer.get("CONFIG", {}).get("hosts", []) if not _patient(host)]
    if not short:
        return []
    return [
        Warning(
            "redis-py 8 gives socket reads a 5 s timeout, which channels-redis's 5 s blocking "
            "receive trips over: receives fail and messages are lost (channels_redis#422).",
            hint='Give each host more: {"address": "redis://...", "socket_timeout": 15} '
            '(a Sentinel host: next to "master_name"; a URL: ?socket_timeout=15).',
            id="realtime.W007",
        )
    ]


def _patient(host: Any) -> bool:
    """Whether reads on this ``hosts`` entry wait longer than the blocking receive.

    As redis-py's ``from_url`` does, a URL's ``?socket_timeout=`` wins over the entry's key;
    a Sentinel entry (``master_name``) passes its keys to the master's connections.
    """
    address: Any
    timeout: float | None
    if isinstance(host, str | bytes):
        address, timeout = host, _REDIS_READ_TIMEOUT
    elif isinstance(host, dict):
        address, timeout = host.get("address"), host.get("socket_timeout", _REDIS_READ_TIMEOUT)
    else:
        return False  # (host, port): redis-py's default
    if isinstance(address, bytes):
        address = address.decode(errors="replace")
    if address:
        from_url = parse_qs(urlsplit(address).query).get("socket_timeout")
        if from_url:
            try:
                timeout = float(from_url[0])
            except ValueError:
                return False
    return timeout is None or timeout > _REDIS_READ_TIMEOUT
