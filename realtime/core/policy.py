"""Who may do what on which stream: one policy for WebSocket, SSE and the REST API.

Actions: ``subscribe`` (receive live events), ``history`` (replay missed or past events:
resume, SSE cursors, the history API), ``presence`` (join and see a stream's members) and
``publish`` (from a client). The default policy, ``RulesPolicy``, reads ``REALTIME["RULES"]``:
stream patterns, first match wins, each with a rule::

    "RULES": {
        "public:*": "public",              # anyone reads; nobody publishes from a client
        "private:*": "private",            # signed-in users read
        "user:{user_id}": "owner",         # only that user
        "user:{user_id}:*": "owner",
        "chat:*": {"subscribe": "authenticated", "presence": "authenticated",
                   "history": "authenticated", "publish": "authenticated"},
        "orders:*": "myshop.policies.OrderPolicy",   # a BasePolicy subclass or a function
    }

A stream no pattern matches is closed to everyone; so is any action a rule does not name.
Replace the whole thing with ``REALTIME["POLICY"] = "myproject.policies.MyPolicy"``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from realtime.conf import realtime_settings
from realtime.streams import PUBLIC_PREFIX, compile_pattern

Action = Literal["subscribe", "publish", "presence", "history"]
ACTIONS: tuple[Action, ...] = ("subscribe", "publish", "presence", "history")
WHO = ("anyone", "authenticated", "staff", "owner", "nobody")

PRESETS: dict[str, dict[str, str]] = {
    "public": {"subscribe": "anyone", "history": "anyone", "presence": "anyone"},
    "private": {
        "subscribe": "authenticated",
        "history": "authenticated",
        "presence": "authenticated",
    },
    "owner": {"subscribe": "owner", "history": "owner", "presence": "owner"},
    "staff": {"subscribe": "staff", "history": "staff", "presence": "staff", "publish": "staff"},
}


class BasePolicy:
    """Subclass and override ``has_permission``.

    It is awaited on the event loop for every subscribe, presence join and client publish,
    so keep it cheap and wrap any ORM access in ``database_sync_to_async``. Do not raise to
    refuse: return ``False``; the client gets a ``forbidden`` error that does not say whether
    the stream exists.
    """

    async def has_permission(self, action: Action, user: Any, stream: str) -> bool:
        raise NotImplementedError("Policy.has_permission() must be overridden.")


def _authenticated(user: Any) -> bool:
    return user is not None and bool(user.is_authenticated) and bool(user.is_active)


def allows(who: str, user: Any, owner: str | None) -> bool:
    """Whether ``user`` is ``who`` ("anyone", "authenticated", "staff", "owner", "nobody")."""
    if who == "anyone":
        return True
    if who == "authenticated":
        return _authenticated(user)
    if who == "staff":
        return _authenticated(user) and bool(user.is_staff)
    if who == "owner":
        return _authenticated(user) and owner is not None and str(user.pk) == owner
    return False


class _Rule:
    def __init__(self, pattern: str, value: Any) -> None:
        self.pattern = pattern
        self.regex = compile_pattern(pattern)
        self.actions: dict[str, str] | None = None
        self.check: Callable[..., Any] | None = None
        if isinstance(value, str) and value in PRESETS:
            self.actions = PRESETS[value]
        elif isinstance(value, dict):
            unknown = set(value) - set(ACTIONS)
            bad = {who for who in value.values() if who not in WHO}
            if unknown or bad:
                raise ImproperlyConfigured(
                    f"REALTIME['RULES'][{pattern!r}]: actions are {', '.join(ACTIONS)}; "
                    f"each maps to one of {', '.join(WHO)}."
                )
            self.actions = value
        else:
            target = import_string(value) if isinstance(value, str) else value
            if inspect.isclass(target) and issubclass(target, BasePolicy):
                self.check = target().has_permission
            elif callable(target):
                self.check = target
            else:
                raise ImproperlyConfigured(
                    f"REALTIME['RULES'][{pattern!r}] must be a preset "
                    f"({', '.join(PRESETS)}), a dict of action: who, a BasePolicy subclass "
                    "or a function (action, user, stream) -> bool."
                )

    async def allows(self, action: Action, user: Any, stream: str, owner: str | None) -> bool:
        if self.actions is not None:
            return allows(self.actions.get(action, "nobody"), user, owner)
        assert self.check is not None
        result = self.check(action, user, stream)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)


@realtime_settings.derived
@lru_cache(maxsize=1)
def rules() -> tuple[_Rule, ...]:
    config = realtime_settings.RULES
    if not isinstance(config, dict):
        raise ImproperlyConfigured("REALTIME['RULES'] must be a dict of pattern: rule.")
    try:
        return tuple(_Rule(pattern, value) for pattern, value in config.items())
    except ImportError as exc:
        raise ImproperlyConfigured(f"REALTIME['RULES']: {exc}") from exc


class RulesPolicy(BasePolicy):
    """The default: ``REALTIME["RULES"]``, first matching pattern decides; ``realtime:*``
    streams are the app's own and always staff-only (read-only)."""

    async def has_permission(self, action: Action, user: Any, stream: str) -> bool:
        if stream.startswith("realtime:"):
            return action != "publish" and allows("staff", user, None)
        for rule in rules():
            match = rule.regex.fullmatch(stream)
            if match is not None:
                return await rule.allows(action, user, stream, match.groupdict().get("user_id"))
        return False


DefaultPolicy = RulesPolicy


class PublicPolicy(BasePolicy):
    """``public:`` streams are open to everything, client publishing included (demos, tests)."""

    async def has_permission(self, action: Action, user: Any, stream: str) -> bool:
        return stream.startswith(PUBLIC_PREFIX)


_policy: dict[Any, BasePolicy] = {}


def get_policy() -> BasePolicy:
    """The configured ``POLICY``, instantiated once per configuration."""
    cls = realtime_settings.POLICY
    policy = _policy.get(cls)
    if policy is None:
        _policy.clear()
        policy = _policy[cls] = cls()
    return policy
