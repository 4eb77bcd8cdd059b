"""The Redis channel layer's ``hosts`` from environment variables: TLS and Sentinel included.

Call it from your settings, so that a deployment switches Redis servers, TLS or Sentinel by
environment, not by code::

    import os
    from realtime.deploy import redis_hosts

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": redis_hosts(os.environ)},
        }
    }

The variables are described in ``docs/deployment.md`` ("Redis: TLS and Sentinel"). It only
builds a list of dicts: it reads no Django setting and opens no connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.connection import SSLConnection, parse_url

__all__ = ["redis_hosts"]

# redis-py's SSL options, and the variable naming each file.
_TLS_FILES = {
    "ssl_ca_certs": "REDIS_TLS_CA",
    "ssl_certfile": "REDIS_TLS_CERT",
    "ssl_keyfile": "REDIS_TLS_KEY",
}


def redis_hosts(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The channels-redis ``hosts`` that ``env`` (e.g. ``os.environ``) describes.

    ``REDIS_URL`` says how to talk to Redis: ``rediss://`` for TLS (``REDIS_TLS_CA``, and
    ``REDIS_TLS_CERT`` with ``REDIS_TLS_KEY`` for a client certificate), credentials, database.
    ``REDIS_SENTINELS`` (``host:port,host:port``) says where: the Sentinels name the master
    ``REDIS_SENTINEL_MASTER``, so the URL's host and port are unused (the URL may be left out);
    ``REDIS_SENTINEL_PASSWORD`` is the Sentinels' own password.

    Raises ``ImproperlyConfigured`` for TLS files without a ``rediss://`` URL and for a
    Sentinel address that is not ``host:port``.
    """
    url = env.get("REDIS_URL") or "redis://"
    tls = {option: env[name] for option, name in _TLS_FILES.items() if env.get(name)}
    if tls and not url.startswith("rediss://"):
        raise ImproperlyConfigured("REDIS_TLS_CA, _CERT and _KEY need a rediss:// REDIS_URL.")
    # redis-py 8 reads with a 5 s socket timeout by default, the same as channels-redis's
    # blocking BZPOPMIN: receives fail and pop messages into the void
    # (django/channels_redis#422). Give reads more time than the pop.
    options: dict[str, Any] = {"socket_timeout": 15, **tls}
    if not env.get("REDIS_SENTINELS"):
        return [{"address": url, **options}]
    # Sentinel: what the URL says (credentials, db, ?options, which win as they do over an
    # address's options) but not where. Over TLS the Sentinels are asked over TLS too.
    parsed = dict(parse_url(url))
    ssl = parsed.pop("connection_class", None) is SSLConnection
    master = {k: v for k, v in {**options, **parsed}.items() if k not in ("host", "port")}
    sentinel_kwargs: dict[str, Any] = {"ssl": True, **tls} if ssl else {}
    if env.get("REDIS_SENTINEL_PASSWORD"):
        sentinel_kwargs["password"] = env["REDIS_SENTINEL_PASSWORD"]
    return [
        {
            "sentinels": [_sentinel_address(a) for a in env["REDIS_SENTINELS"].split(",")],
            "master_name": env.get("REDIS_SENTINEL_MASTER") or "mymaster",
            "sentinel_kwargs": sentinel_kwargs,
            "ssl": ssl,
            **master,
        }
    ]


def _sentinel_address(address: str) -> tuple[str, int]:
    """One Sentinel's ``host:port`` (IPv6 in brackets, as in URLs) as redis-py wants it."""
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {address!r} is not host:port.")
    return host.strip("[]"), int(port)
