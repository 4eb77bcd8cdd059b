"""Settings for the demo project.

Embedded default: SQLite and the in-memory channel layer, one process. Set ``DATABASE_URL``
(e.g. ``postgres://user@127.0.0.1:5432/realtime``) for PostgreSQL and ``REDIS_URL``
(e.g. ``redis://127.0.0.1:6379/0``) for the Redis channel layer, which several daphne
processes need to share events; ``rediss://`` with ``REDIS_TLS_*`` for TLS, and
``REDIS_SENTINELS`` for Redis Sentinel (see :func:`redis_hosts`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.connection import SSLConnection, parse_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "channels",
    "realtime",
    "project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

SQLITE_PATH = os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{SQLITE_PATH}",
        # Django advises against persistent connections under ASGI; pooling does it right.
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Writers take the lock up front instead of failing with "database is locked"
        # when two of them upgrade a read transaction at once.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests run real daphne processes next to pytest: they must share a file, not :memory:.
    # One per test run, so runs side by side do not drop each other's database.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get(
            "SQLITE_TEST_PATH", str(BASE_DIR / ".run" / f"test-{os.getpid()}.sqlite3")
        )
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 8}
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


REDIS_URL = os.environ.get("REDIS_URL", "")


def _sentinel_address(address: str) -> tuple[str, int]:
    """One Sentinel's ``host:port`` (IPv6 in brackets, as in URLs) as redis-py wants it."""
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {address!r} is not host:port.")
    return host.strip("[]"), int(port)


def redis_hosts(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The Redis layer's ``hosts``, so TLS and Sentinel take environment variables, not code.

    ``REDIS_URL`` says how to talk to Redis: ``rediss://`` for TLS (``REDIS_TLS_CA``, and
    ``REDIS_TLS_CERT`` with ``REDIS_TLS_KEY`` for a client certificate), credentials, database.
    ``REDIS_SENTINELS`` (``host:port,host:port``) says where: the Sentinels name the master
    ``REDIS_SENTINEL_MASTER``, so the URL's host and port are unused (the URL may be left out).
    """
    url = env.get("REDIS_URL") or "redis://"
    files = {
        "ssl_ca_certs": "REDIS_TLS_CA",
        "ssl_certfile": "REDIS_TLS_CERT",
        "ssl_keyfile": "REDIS_TLS_KEY",
    }
    tls = {option: env[name] for option, name in files.items() if env.get(name)}
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


if REDIS_URL or os.environ.get("REDIS_SENTINELS"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": redis_hosts(os.environ),
                "prefix": os.environ.get("REDIS_PREFIX", "asgi"),
                # Each process's hub receives every event of the streams it serves: give
                # its channel room for bursts (the default of 100 drops silently).
                "channel_capacity": {"realtime.hub.*": 100_000},
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


REALTIME = {
    "HEARTBEAT_INTERVAL": _env_float("REALTIME_HEARTBEAT_INTERVAL", 15),
    "HEARTBEAT_TIMEOUT": _env_float("REALTIME_HEARTBEAT_TIMEOUT", 30),
    "RECONCILE_INTERVAL": _env_float("REALTIME_RECONCILE_INTERVAL", 5),
    "PRESENCE_TIMEOUT": _env_float("REALTIME_PRESENCE_TIMEOUT", 30),
    "PRESENCE_GRACE": _env_float("REALTIME_PRESENCE_GRACE", 3),
    # REALTIME_GC_FREEZE=0 keeps the collector as it is (to measure what freezing buys).
    "GC_FREEZE": os.environ.get("REALTIME_GC_FREEZE", "1") != "0",
    # Load tests open thousands of connections from one loopback address.
    "MAX_CONNECTIONS_PER_IP": int(_env_float("REALTIME_MAX_CONNECTIONS_PER_IP", 1000)),
    # Prometheus may read /realtime/metrics with "Authorization: Bearer <this>".
    "METRICS_TOKEN": os.environ.get("REALTIME_METRICS_TOKEN") or None,
    # First match wins: the chat and cursors demos let anyone publish from the browser;
    # other public: streams are read-only for clients.
    "RULES": {
        "public:chat:*": {
            "subscribe": "anyone",
            "history": "anyone",
            "presence": "anyone",
            "publish": "anyone",
        },
        "public:cursors:*": {
            "subscribe": "anyone",
            "history": "anyone",
            "presence": "anyone",
            "publish": "anyone",
        },
        "public:*": "public",
        # The task board's live model decides who reads its streams (docs/live-models.md).
        "tasks": "realtime.live.rule",
        "tasks:*": "realtime.live.rule",
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "admin:login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "realtime": {
            "handlers": ["console"],
            "level": os.environ.get("REALTIME_LOG", "INFO"),
            "propagate": False,
        },
    },
}
