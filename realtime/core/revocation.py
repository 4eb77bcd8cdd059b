"""Ending access when it changes, on every server process.

Socket.IO, Phoenix and Action Cable check credentials once, at connect. Here a
``realtime.revoke`` message goes to every hub (the ``realtime.control`` group) when:

* a session logs out (``user_logged_out``): the connections opened with that session, or
  with a ticket it issued, close;
* a user is deactivated or changes password: all of that user's connections close (the
  client reconnects; with the new session hash its current session gets back in);
* a DRF token is deleted: the connections authenticated with it close;
* your code calls ``revoke(...)`` — for a user, a session, a token or one connection, or
  only for the streams matching a pattern (those subscriptions end, the connection stays).

Each hub also re-checks its connections every ``REAUTH_INTERVAL`` seconds (sessions still
valid, users still active, tokens still there), which bounds the delay when the channel
layer is down: a revoked user is cut off within ``REAUTH_INTERVAL`` seconds at most.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db import transaction
from django.utils.crypto import constant_time_compare

from realtime.bus import control_send, messages
from realtime.bus.groups import CONTROL_GROUP
from realtime.conf import realtime_settings
from realtime.storage.dbthreads import in_lane

logger = logging.getLogger("realtime.revocation")

__all__ = ["CONTROL_GROUP", "arevoke", "revoke"]


def _message(
    user: Any,
    session: str | None,
    token: str | None,
    connection: str | None,
    streams: str | None,
    reason: str,
) -> messages.RevokeMessage:
    if user is not None and not isinstance(user, str | int):
        user = user.pk
    if all(value is None for value in (user, session, token, connection)):
        raise ValueError("revoke() needs a user, session, token or connection.")
    return messages.revoke(
        user=None if user is None else str(user),
        session=session,
        token=token,
        connection=connection,
        streams=streams,
        reason=reason,
    )


async def _send(message: messages.RevokeMessage) -> None:
    try:
        await control_send(message)
    except Exception:
        logger.warning(
            "Sending a revocation failed; hubs will catch it within REAUTH_INTERVAL.",
            exc_info=True,
        )


def revoke(
    user: Any = None,
    *,
    session: str | None = None,
    token: str | None = None,
    connection: str | None = None,
    streams: str | None = None,
    reason: str = "Access revoked.",
) -> None:
    """End the matching connections on every server process (after the current commit).

    Name a ``user`` (instance or pk), a ``session`` key, a ``token`` key or a ``connection``
    id; with ``streams`` (a pattern such as ``"orders:*"``), only those subscriptions end.
    """
    message = _message(user, session, token, connection, streams, reason)
    transaction.on_commit(lambda: async_to_sync(_send)(message), robust=True)


async def arevoke(
    user: Any = None,
    *,
    session: str | None = None,
    token: str | None = None,
    connection: str | None = None,
    streams: str | None = None,
    reason: str = "Access revoked.",
) -> None:
    """Async twin of ``revoke`` (sends at once)."""
    await _send(_message(user, session, token, connection, streams, reason))


# --- signal receivers (connected in RealtimeConfig.ready) -------------------------------
def on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    session = getattr(getattr(request, "session", None), "session_key", None)
    if session:
        revoke(session=session, reason="Signed out.")


def on_user_pre_save(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Remember whether this save changes the password or deactivates the user."""
    instance._realtime_revoke = False
    if instance.pk is None or kwargs.get("raw"):
        return
    fields = kwargs.get("update_fields")
    if fields is not None and not {"password", "is_active"} & set(fields):
        return
    old = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    if old is None:
        return
    deactivated = old["is_active"] and not getattr(instance, "is_active", True)
    instance._realtime_revoke = deactivated or old["password"] != instance.password


def on_user_post_save(sender: Any, instance: Any, **kwargs: Any) -> None:
    if getattr(instance, "_realtime_revoke", False):
        revoke(instance, reason="Credentials changed.")


def on_token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    revoke(token=instance.key, reason="Token deleted.")


# --- the periodic re-check ----------------------------------------------------------------
def recheck(connections: list[dict[str, Any]]) -> list[str]:
    """Ids of the connections whose credentials are no longer valid.

    Each entry: ``{"id", "user", "method", "session", "token"}``.
    """
    user_ids = {c["user"] for c in connections if c["user"] is not None}
    users = {
        str(u.pk): u
        for u in get_user_model()._default_manager.filter(pk__in=user_ids, is_active=True)
    }
    store = import_module(settings.SESSION_ENGINE).SessionStore
    sessions: dict[str, bool] = {}
    tokens: dict[str, bool] = {}
    invalid = []
    for conn in connections:
        user = users.get(str(conn["user"]))
        if user is None:
            invalid.append(conn["id"])
            continue
        key = conn.get("session")
        if key:
            if key not in sessions:
                data = store(session_key=key).load()
                sessions[key] = str(data.get(SESSION_KEY)) == str(user.pk) and (
                    not hasattr(user, "get_session_auth_hash")
                    or constant_time_compare(
                        data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
                    )
                )
            if not sessions[key]:
                invalid.append(conn["id"])
                continue
        token = conn.get("token")
        if token:
            if token not in tokens:
                tokens[token] = realtime_settings.TOKEN_AUTHENTICATOR(token) is not None
            if not tokens[token]:
                invalid.append(conn["id"])
    return invalid


arecheck = in_lane(recheck)
