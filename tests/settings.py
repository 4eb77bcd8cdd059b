"""Settings of the test suite: the pytest process's and those of every process it starts.

``make test``, ``pyproject.toml`` (pytest) and ``tests/servers.py`` (daphne and ``manage.py``
subprocesses) all use ``DJANGO_SETTINGS_MODULE=tests.settings``. The tests exercise the app
through the demo project (its pages, URLs, ASGI application, stream rules and the
``REALTIME_*`` variables it reads), so everything starts from the demo's settings; what only
the tests need is here:

* test databases of the session's own: ``.run/test-<pid>.sqlite3`` on SQLite (a file, which
  the daphne subprocesses share; ``SQLITE_TEST_PATH`` names another), ``test_<NAME>_<pid>``
  on PostgreSQL;
* a channels-redis prefix of the session's own, ``rt-test-<pid>``;
* ``REALTIME`` overrides from ``REALTIME_TEST_OVERRIDES`` (JSON), so a daphne subprocess gets
  exactly the app settings a test needs, e.g. ``{"MAX_SUBSCRIPTIONS": 2}``;
* ``REDIS_SHARDS``: the channel layer sharded over these Redis URLs instead of REDIS_URL;
* ``tests.signal_log``, an app that logs realtime signals to ``REALTIME_TEST_SIGNAL_LOG``.
"""

import json
import os

from project.settings import *  # noqa: F403
from project.settings import (
    BASE_DIR,
    CHANNEL_LAYERS,
    DATABASES,
    INSTALLED_APPS,
    REALTIME,
    SQLITE_OPTIONS,
)

INSTALLED_APPS = [*INSTALLED_APPS, "tests.signal_log", "tests.live_capture"]
# tests.live_capture's live models (capture tests) decide who reads their streams.
_CAPTURE_STREAMS = ["cards", "cards:*", "boards:*:cards", "notes:*", "quiet", "labels", "shops"]
_CAPTURE_STREAMS += ["venues", "boards:*:labels", "boards:*:shops", "boards:*:venues"]
_CAPTURE_RULES = dict.fromkeys(_CAPTURE_STREAMS, "realtime.live.rule")
REALTIME = {**REALTIME, "RULES": {**REALTIME["RULES"], **_CAPTURE_RULES}}
REALTIME = {**REALTIME, **json.loads(os.environ.get("REALTIME_TEST_OVERRIDES") or "{}")}

# Sessions side by side (two checkouts, or two people in one) must not meet: each has its own
# test databases and its own channels-redis prefix, named after the pid of its pytest
# process. The processes a session starts inherit REALTIME_TEST_SESSION (tests/servers.py),
# so they share its prefix; they reach its test database through DATABASE_URL.
# Under pytest-xdist (make test runs the suite in several workers) the workers inherit the
# controller's REALTIME_TEST_SESSION: each adds its own name (gw0, gw1, ...) to it.
_session = os.environ.setdefault("REALTIME_TEST_SESSION", str(os.getpid()))
_worker = os.environ.get("PYTEST_XDIST_WORKER")
TEST_SESSION = f"{_session}-{_worker}" if _worker else _session
REDIS_PREFIX = f"rt-test-{TEST_SESSION}"

_database = dict(DATABASES["default"])
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # Tests run real daphne processes next to pytest: they must share a file, not :memory:.
    _default_path = BASE_DIR / ".run" / f"test-{TEST_SESSION}.sqlite3"
    _database["TEST"] = {"NAME": os.environ.get("SQLITE_TEST_PATH", str(_default_path))}
elif _database["ENGINE"] == "django.db.backends.postgresql":
    _database["TEST"] = {"NAME": f"test_{_database['NAME']}_{TEST_SESSION}"}
# A second database, for what happens when a live model is saved on one that does not hold
# the events (tests/e2e/test_live_models.py); SQLite whatever the default is.
_archive = BASE_DIR / ".run" / f"archive-{TEST_SESSION}.sqlite3"
DATABASES = {
    **DATABASES,
    "default": _database,
    "archive": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_archive),
        "TEST": {"NAME": str(_archive)},
        "OPTIONS": dict(SQLITE_OPTIONS),  # as the demo's SQLite (realtime.W010 otherwise)
    },
}

_layer = CHANNEL_LAYERS["default"]
if "CONFIG" in _layer:  # the Redis layer, which make test always has (REDIS_URL)
    CHANNEL_LAYERS = {"default": {**_layer, "CONFIG": {**_layer["CONFIG"], "prefix": REDIS_PREFIX}}}
# REDIS_SHARDS (comma-separated URLs): channels-redis sharded over several Redis servers
# (tests/e2e/test_backplanes.py).
if os.environ.get("REDIS_SHARDS") and "CONFIG" in _layer:
    _urls = os.environ["REDIS_SHARDS"].split(",")
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [
        {"address": url, "socket_timeout": 15} for url in _urls
    ]
