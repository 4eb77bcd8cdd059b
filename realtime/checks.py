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
    from realtime import policy, retention
    from realtime.conf import IMPORT_STRINGS, realtime_settings

    errors: list[Any] = []
    alias = "default"
    try:
        realtime_settings.reload()
        for name in IMPORT_STRINGS:
            getattr(realtime_settings, name)  # imports the dotted path
        alias = realtime_settings.CHANNEL_LAYER
        retention.rules.cache_clear()
        retention.rules()
        policy.rules.cache_clear()
        if issubclass(realtime_settings.POLICY, policy.RulesPolicy):
            policy.rules()
        from realtime.api.authentication import api_tokens

        api_tokens()  # the REST API's server tokens: a list of long strings
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="realtime.E001"))
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if alias not in layers:
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
    from realtime.policy import PublicPolicy, RulesPolicy

    try:
        alias = realtime_settings.CHANNEL_LAYER
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
