"""System checks for the foot-guns of running live streams under Django."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from realtime import retention
    from realtime.conf import realtime_settings

    errors: list[Any] = []
    try:
        realtime_settings.reload()
        realtime_settings.POLICY  # noqa: B018  (imports the dotted path)
        retention.rules.cache_clear()
        retention.rules()
    except ImproperlyConfigured as exc:
        errors.append(Error(str(exc), id="realtime.E001"))
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    alias = getattr(settings, "REALTIME", {}).get("CHANNEL_LAYER", "default")
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
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    alias = getattr(settings, "REALTIME", {}).get("CHANNEL_LAYER", "default")
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
        if db.get("CONN_MAX_AGE"):
            warnings.append(
                Warning(
                    f"DATABASES[{alias_name!r}] sets CONN_MAX_AGE; under ASGI persistent "
                    "connections leak (Django advises against them).",
                    hint="Set CONN_MAX_AGE = 0; on PostgreSQL use OPTIONS['pool'] instead.",
                    id="realtime.W002",
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
