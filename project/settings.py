"""Settings for the demo project.

Embedded default: SQLite and the in-memory channel layer, one process. Set ``DATABASE_URL``
(e.g. ``postgres://user@127.0.0.1:5432/realtime``) for PostgreSQL and ``REDIS_URL``
(e.g. ``redis://127.0.0.1:6379/0``) for the Redis channel layer, which several daphne
processes need to share events; ``rediss://`` with ``REDIS_TLS_*`` for TLS, and
``REDIS_SENTINELS`` for Redis Sentinel (see :func:`realtime.deploy.redis_hosts`).
``REALTIME_BACKPLANE`` (e.g. ``nats://127.0.0.1:4222``) puts the processes' fan-out on NATS
instead of the channel layer (``REALTIME["BACKPLANE"]``, docs/deployment.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from realtime.deploy import redis_hosts

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
# Writers take the lock up front instead of failing with "database is locked" when two of
# them upgrade a read transaction at once; WAL lets readers run beside the writer.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{SQLITE_PATH}",
        # Django advises against persistent connections under ASGI; pooling does it right.
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 8}
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


REDIS_URL = os.environ.get("REDIS_URL", "")

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
    # nats://host:4222[?prefix=name]: fan-out over NATS; unset: over the channel layer.
    "BACKPLANE": os.environ.get("REALTIME_BACKPLANE") or None,
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
