"""The app's settings, resolved in one place.

A project configures the app with one dict in its settings::

    REALTIME = {
        "HEARTBEAT_INTERVAL": 15,
        "RETENTION": {"chat:*": {"max_events": 500}, "*": {"max_age": 86400}},
    }

Every key is optional; ``DEFAULTS`` documents them (``docs/settings.md`` in full). Unknown keys
are rejected, so a typo fails loudly instead of being ignored. Values are read lazily on first
use and reloaded when Django's ``setting_changed`` fires (``override_settings`` in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # --- Connections -------------------------------------------------------------------
    # Seconds between client heartbeats; sent to clients in ``welcome`` and used as the
    # SSE keep-alive comment interval.
    "HEARTBEAT_INTERVAL": 15,
    # Seconds of silence after which the server closes a WebSocket (close code 4408).
    "HEARTBEAT_TIMEOUT": 30,
    # Milliseconds an EventSource waits before reconnecting (the SSE ``retry:`` hint).
    "SSE_RETRY": 2000,
    # --- Shutdown (SIGTERM to ``python -m realtime.serve``; docs/operations.md) --------------
    # Longest a draining process waits for its clients to go and its lease to be removed
    # before it exits anyway.
    "DRAIN_TIMEOUT": 10,
    # Seconds over which a draining process's clients are told to reconnect: each gets its
    # own delay, drawn uniformly from [0, DRAIN_SPREAD], so they do not all come back at once.
    "DRAIN_SPREAD": 5,
    # --- Flow control (realtime.flow) ---------------------------------------------------
    # Frames / bytes a connection may have unacknowledged before it counts as slow.
    "OUTBOX_WINDOW": {"messages": 10_000, "bytes": 16 * 1024 * 1024},
    # What a slow connection's subscriptions get, by stream pattern (first match wins):
    # "disconnect" (close 4409, the client resumes), "skip" (drop, then a gap frame) or
    # "conflate" (keep the latest event per key).
    "SLOW_CONSUMERS": {"*": "disconnect"},
    # --- Limits ------------------------------------------------------------------------
    # Largest client WebSocket frame accepted, in bytes (larger: error ``frame_too_large``).
    "MAX_FRAME_SIZE": 64 * 1024,
    # Largest event payload (``data`` encoded as JSON), in bytes.
    "MAX_EVENT_SIZE": 64 * 1024,
    # Longest stream name accepted (at most 200, the database column's size).
    "MAX_STREAM_NAME_LENGTH": 200,
    # Streams one connection may subscribe to at once.
    "MAX_SUBSCRIPTIONS": 100,
    # --- Delivery ----------------------------------------------------------------------
    # Events read from the database per page while replaying missed history.
    "REPLAY_BATCH_SIZE": 500,
    # Seconds between each process's check of its streams' positions in the database, the
    # safety net that delivers events whose channel-layer message was lost.
    "RECONCILE_INTERVAL": 5.0,
    # Seconds between a process's writes of live events to its connections while events
    # keep coming (an idle process writes at once). Events queued meanwhile leave together:
    # one SSE chunk, or one ``batch`` frame for WebSocket clients that asked for them.
    # Larger: fewer, bigger writes (more throughput) for up to this much added latency.
    "FLUSH_INTERVAL": 0.02,
    # Freeze a server process's startup heap out of the garbage collector's full passes,
    # once, when its hub starts, and collect the youngest generation every 10,000
    # allocations rather than 700 (``realtime.gcpauses``): those passes otherwise stall every
    # connection of the process for tens of milliseconds, and take a tenth of a handshake.
    "GC_FREEZE": True,
    # Channel layer alias (in CHANNEL_LAYERS) used for fan-out between processes.
    "CHANNEL_LAYER": "default",
    # The backplane between server processes (docs/deployment.md): None for the channel
    # layer above, a NATS URL, "nats://host:4222[,nats://host2:4222][?prefix=...]", or Redis
    # Cluster's sharded pub/sub, "redis-cluster://host:7000,host:7001[?prefix=...]".
    "BACKPLANE": None,
    # Seconds between each process's stats report: alert checks, and the admin dashboard's
    # live figures (sent to the staff-only ``realtime:admin:stats`` stream).
    "STATS_INTERVAL": 5.0,
    # Alert thresholds (None: off). Crossing one logs a WARNING and sends
    # ``realtime.signals.alert_raised``; going back under sends ``alert_cleared``.
    "ALERTS": {
        "connections_per_process": None,
        "deliveries_per_second": None,
        "slow_consumer_drops_per_second": None,
        "sweeper_lag_seconds": 30,
    },
    # Bearer token(s) that may read the Prometheus metrics (``realtime.metrics``) without a
    # staff session: a string, or a list to rotate. None: staff sessions only.
    "METRICS_TOKEN": None,
    # --- History -----------------------------------------------------------------------
    # Retention per stream pattern (``realtime.streams.compile_pattern``; first match wins):
    # ``max_events`` and/or ``max_age`` (seconds or timedelta). ``None`` keeps without limit.
    "RETENTION": {"*": {"max_events": 10_000, "max_age": timedelta(days=7)}},
    # Seconds between in-process sweeps that delete events older than their ``max_age``.
    "PRUNE_INTERVAL": 60.0,
    # --- Presence ----------------------------------------------------------------------
    # Seconds a connection may go unheard (no frame, no HTTP heartbeat) before its presence
    # leaves; also bounds how long a crashed process's members linger (its lease expires).
    "PRESENCE_TIMEOUT": 30,
    # Seconds a closed connection stays present, so a reloading tab does not flap leave/join.
    "PRESENCE_GRACE": 3,
    # Members per stream; a join beyond it is refused with ``presence_full``. None: no cap.
    "PRESENCE_MAX_MEMBERS": 10_000,
    # Largest presence metadata, in bytes of JSON.
    "PRESENCE_MAX_META_SIZE": 2048,
    # Stream patterns whose presence is sent as occupancy counts only (big rooms).
    "PRESENCE_COUNTS_ONLY": [],
    # How long presence history (``PresenceSession``: who was present when) is kept after a
    # session ends (seconds or timedelta; None: forever). Pruned with the events.
    "PRESENCE_HISTORY_RETENTION": timedelta(days=30),
    # Record anonymous members' sessions too. Off: only signed-in users' are kept, so
    # anonymous clients cannot fill the table.
    "PRESENCE_HISTORY_ANONYMOUS": False,
    # Accept WebSocket handshakes at all; False refuses them (HTTP 403) so clients fall back
    # to SSE — for testing that fallback, or behind infrastructure that breaks WebSocket.
    "WEBSOCKET_ENABLED": True,
    # --- Security (docs/security.md) --------------------------------------------------
    # Dotted path of the class deciding who may subscribe to and publish on which stream.
    "POLICY": "realtime.policy.RulesPolicy",
    # The RulesPolicy's rules: stream pattern -> preset, {action: who}, or dotted path.
    "RULES": {"public:*": "public"},
    # Refuse anonymous connections at the handshake (WebSocket: HTTP 403; SSE: HTTP 401).
    "AUTH_REQUIRED": False,
    # Origins allowed to open a WebSocket ("https://example.com"); None: those of
    # ALLOWED_HOSTS, on any scheme and port. ["*"] allows any (a system check warns).
    "ALLOWED_ORIGINS": None,
    # Callable(key) -> active user or None, for "Authorization: Token|Bearer <key>".
    "TOKEN_AUTHENTICATOR": "realtime.auth.drf_token_user",
    # Seconds a connection ticket stays valid (it also works only once).
    "TICKET_MAX_AGE": 30,
    # Seconds between each process's re-check of its connections' credentials (sessions
    # still valid, users still active, tokens not deleted); revocations that come through
    # the channel layer act at once, this bounds them when it is down.
    "REAUTH_INTERVAL": 60,
    # Open connections per user and per client IP address, across all processes.
    "MAX_CONNECTIONS_PER_USER": 100,
    "MAX_CONNECTIONS_PER_IP": 1000,
    # Client frames per second per connection: sustained ``rate``, bursts up to ``burst``.
    "RATE_LIMIT": {"rate": 50, "burst": 100},
    # Deepest nesting of arrays/objects accepted in a client frame.
    "MAX_JSON_DEPTH": 32,
    # --- REST API (docs/api.md) -------------------------------------------------------
    # Server API tokens: a backend sending "Authorization: Bearer <token>" with one of these
    # may use the whole REST API, publishing included. A list, so a token can be rotated.
    "API_TOKENS": [],
    # --- live models (docs/live-models.md) ----------------------------------------------
    # Live models ("app_label.ModelName") whose bulk ORM writes (update(), bulk_create(),
    # bulk_update(), on_delete=SET_NULL/SET_DEFAULT) are not captured, whatever register()
    # says: for a large import, say. Saves and deletes still publish.
    "LIVE_CAPTURE_OFF": [],
}

IMPORT_STRINGS = {"POLICY", "TOKEN_AUTHENTICATOR"}

SLOW_CONSUMER_POLICIES = ("disconnect", "skip", "conflate")


def _number(
    value: Any, *, optional: bool = False, zero: bool = False, whole: bool = False
) -> str | None:
    if value is None and optional:
        return None
    kinds = int if whole else int | float
    wanted = ("a positive whole number" if whole else "a positive number") + (
        " or None" if optional else ""
    )
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        return wanted
    return wanted if value == 0 and not zero else None


def _whole(value: Any) -> str | None:
    return _number(value, whole=True)


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "True or False"


def _shape(value: Any, keys: tuple[str, ...], minimum: float) -> str | None:
    wanted = "a dict {" + ", ".join(f'"{key}": <number>' for key in keys) + "}"
    if not isinstance(value, dict) or set(value) != set(keys):
        return wanted
    for key in keys:
        item = value[key]
        if isinstance(item, bool) or not isinstance(item, int | float) or item < minimum:
            return f"{wanted}, each at least {minimum:g}"
    return None


def _slow_consumers(value: Any) -> str | None:
    wanted = f"a dict of stream pattern -> one of {', '.join(SLOW_CONSUMER_POLICIES)}"
    if not isinstance(value, dict):
        return wanted
    for pattern, policy in value.items():
        if not isinstance(pattern, str) or policy not in SLOW_CONSUMER_POLICIES:
            return f"{wanted} ({pattern!r}: {policy!r} is not)"
    return None


# URL schemes ``REALTIME["BACKPLANE"]`` takes (``realtime.bus.backends``).
BACKPLANE_SCHEMES = ("nats", "tls", "redis-cluster")


def _backplane(value: Any) -> str | None:
    wanted = (
        "None (the channel layer) or a URL nats://host:port[,...][?prefix=name] or "
        "redis-cluster://host:port[,...][?prefix=name]"
    )
    if value is None:
        return None
    if not isinstance(value, str) or value.split("://", 1)[0] not in BACKPLANE_SCHEMES:
        return wanted
    return None if value.split("://", 1)[1].strip() else wanted


def _patterns(value: Any) -> str | None:
    ok = isinstance(value, list | tuple) and all(isinstance(p, str) for p in value)
    return None if ok else "a list of stream patterns"


# What each key must be, as the words of its error. Keys not listed are checked where they
# are parsed (RETENTION, RULES, ALERTS, API_TOKENS, the import strings).
VALIDATORS: dict[str, Callable[[Any], str | None]] = {
    **{
        name: _number
        for name in (
            "HEARTBEAT_INTERVAL",
            "HEARTBEAT_TIMEOUT",
            "RECONCILE_INTERVAL",
            "STATS_INTERVAL",
            "PRUNE_INTERVAL",
            "PRESENCE_TIMEOUT",
            "TICKET_MAX_AGE",
            "REAUTH_INTERVAL",
            "DRAIN_TIMEOUT",
        )
    },
    **{
        name: _whole
        for name in (
            "SSE_RETRY",
            "MAX_FRAME_SIZE",
            "MAX_EVENT_SIZE",
            "MAX_STREAM_NAME_LENGTH",
            "MAX_SUBSCRIPTIONS",
            "REPLAY_BATCH_SIZE",
            "PRESENCE_MAX_META_SIZE",
            "MAX_JSON_DEPTH",
        )
    },
    "FLUSH_INTERVAL": lambda value: _number(value, zero=True),
    "PRESENCE_GRACE": lambda value: _number(value, zero=True),
    "DRAIN_SPREAD": lambda value: _number(value, zero=True),
    **{
        name: lambda value: _number(value, optional=True, whole=True)
        for name in ("PRESENCE_MAX_MEMBERS", "MAX_CONNECTIONS_PER_USER", "MAX_CONNECTIONS_PER_IP")
    },
    **{
        name: _flag
        for name in (
            "GC_FREEZE",
            "AUTH_REQUIRED",
            "WEBSOCKET_ENABLED",
            "PRESENCE_HISTORY_ANONYMOUS",
        )
    },
    "OUTBOX_WINDOW": lambda value: _shape(value, ("messages", "bytes"), 1),
    "RATE_LIMIT": lambda value: _shape(value, ("rate", "burst"), 1),
    "SLOW_CONSUMERS": _slow_consumers,
    "PRESENCE_COUNTS_ONLY": _patterns,
    "LIVE_CAPTURE_OFF": lambda value: (
        None
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        else 'a list of model labels ("app_label.ModelName")'
    ),
    "BACKPLANE": _backplane,
}

# The column holding stream names is this wide; the setting may only lower it.
STREAM_NAME_COLUMN = 200


class _Cached(Protocol):
    def cache_clear(self) -> None: ...


C = TypeVar("C", bound=_Cached)


class SettingError(ImproperlyConfigured):
    """A ``REALTIME`` key is missing its shape; ``key`` names it (for the check's hint)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class RealtimeSettings:
    """Attribute access to ``settings.REALTIME`` merged over ``DEFAULTS``, checked and typed.

    The annotations are what each key holds once checked (``VALIDATORS``; the others are
    checked where they are parsed); a test keeps them and ``DEFAULTS`` in step.
    """

    HEARTBEAT_INTERVAL: float
    HEARTBEAT_TIMEOUT: float
    SSE_RETRY: int
    DRAIN_TIMEOUT: float
    DRAIN_SPREAD: float
    OUTBOX_WINDOW: dict[str, int]
    SLOW_CONSUMERS: dict[str, str]
    MAX_FRAME_SIZE: int
    MAX_EVENT_SIZE: int
    MAX_STREAM_NAME_LENGTH: int
    MAX_SUBSCRIPTIONS: int
    REPLAY_BATCH_SIZE: int
    RECONCILE_INTERVAL: float
    FLUSH_INTERVAL: float
    GC_FREEZE: bool
    CHANNEL_LAYER: str
    BACKPLANE: str | None
    STATS_INTERVAL: float
    ALERTS: dict[str, float | None]
    METRICS_TOKEN: str | list[str] | None
    RETENTION: dict[str, dict[str, Any]]
    PRUNE_INTERVAL: float
    PRESENCE_TIMEOUT: float
    PRESENCE_GRACE: float
    PRESENCE_MAX_MEMBERS: int | None
    PRESENCE_MAX_META_SIZE: int
    PRESENCE_COUNTS_ONLY: list[str]
    PRESENCE_HISTORY_RETENTION: float | timedelta | None
    PRESENCE_HISTORY_ANONYMOUS: bool
    WEBSOCKET_ENABLED: bool
    POLICY: Any  # the class, imported
    RULES: dict[str, Any]
    AUTH_REQUIRED: bool
    ALLOWED_ORIGINS: list[str] | None
    TOKEN_AUTHENTICATOR: Callable[[str], Any]  # imported
    TICKET_MAX_AGE: float
    REAUTH_INTERVAL: float
    MAX_CONNECTIONS_PER_USER: int | None
    MAX_CONNECTIONS_PER_IP: int | None
    RATE_LIMIT: dict[str, float]
    MAX_JSON_DEPTH: int
    API_TOKENS: list[str]
    LIVE_CAPTURE_OFF: list[str]

    def __init__(self) -> None:
        self._cached: dict[str, Any] = {}
        self._user: dict[str, Any] | None = None
        self._derived: list[Callable[[], None]] = []  # cache_clear of what is parsed from keys

    def derived(self, cached: C) -> C:
        """Register a cached function of the settings (``RULES`` parsed, say): cleared with
        them on ``reload``, so one receiver serves every module that parses a key."""
        self._derived.append(cached.cache_clear)
        return cached

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._user is None:
            value = getattr(settings, "REALTIME", {}) or {}
            if not isinstance(value, dict):
                raise ImproperlyConfigured("settings.REALTIME must be a dict.")
            unknown = sorted(set(value) - set(DEFAULTS))
            if unknown:
                raise ImproperlyConfigured(
                    f"Unknown key(s) in settings.REALTIME: {', '.join(unknown)}. "
                    f"Valid keys are: {', '.join(sorted(DEFAULTS))}."
                )
            self._user = value
        return self._user

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid realtime setting: {name!r}")
        if name not in self._cached:
            value = self.user_settings.get(name, DEFAULTS[name])
            validator = VALIDATORS.get(name)
            wanted = validator(value) if validator is not None else None
            if wanted is not None:
                raise SettingError(name, f"REALTIME[{name!r}] must be {wanted}, not {value!r}.")
            if name in IMPORT_STRINGS and isinstance(value, str):
                try:
                    value = import_string(value)
                except ImportError as exc:
                    raise SettingError(
                        name, f"REALTIME[{name!r}] = {value!r} could not be imported: {exc}"
                    ) from exc
            self._cached[name] = value
        return self._cached[name]

    def validate(self) -> None:
        """Resolve every key now: the first that is wrong raises ``ImproperlyConfigured``."""
        for name in DEFAULTS:
            getattr(self, name)

    def reload(self) -> None:
        self._cached.clear()
        self._user = None
        for clear in self._derived:
            clear()


realtime_settings = RealtimeSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "REALTIME":
        realtime_settings.reload()


setting_changed.connect(_reload, dispatch_uid="realtime.conf.reload")
