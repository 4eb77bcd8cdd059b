"""Short-lived, single-use connection tickets.

A browser cannot put an ``Authorization`` header on a ``WebSocket`` or an ``EventSource``, and
a token in the URL ends up in access logs. So an authenticated page asks for a ticket
(``POST /realtime/ticket/`` or ``realtime.tickets.issue(user)``) and presents it once, within
``TICKET_MAX_AGE`` seconds, in the WebSocket subprotocol list or an ``Authorization: Ticket``
header. A ticket is signed with ``SECRET_KEY``, names the user and the session that asked for
it (logging out of that session also ends the connections it opened), and is redeemed at most
once across all processes (its nonce is recorded in ``TicketUse``).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.db import IntegrityError, transaction
from django.utils import timezone

from realtime.conf import realtime_settings
from realtime.models import TicketUse
from realtime.storage.dbthreads import in_lane

SALT = "realtime.ticket"


def _signer() -> signing.TimestampSigner:
    # "." keeps the ticket within the characters a WebSocket subprotocol may contain.
    return signing.TimestampSigner(salt=SALT, sep=".")


def issue(user: Any, session_key: str | None = None) -> str:
    """A ticket for ``user`` (authenticated), valid once for ``TICKET_MAX_AGE`` seconds."""
    if user is None or not user.is_authenticated:
        raise ValueError("Tickets are for authenticated users.")
    claims = {"u": str(user.pk), "s": session_key, "n": secrets.token_hex(16)}
    return _signer().sign_object(claims)


def redeem(ticket: str) -> dict[str, Any] | None:
    """The ticket's ``{"user", "session"}``, or None if forged, expired, reused or inactive."""
    if len(ticket) > 512:
        return None
    max_age = realtime_settings.TICKET_MAX_AGE
    try:
        claims = _signer().unsign_object(ticket, max_age=max_age)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("n"), str):
        return None
    try:
        with transaction.atomic():
            TicketUse.objects.create(nonce=claims["n"][:32])
    except IntegrityError:
        return None  # already used
    user_pk = claims.get("u")
    if not isinstance(user_pk, str | int):
        return None
    user = get_user_model()._default_manager.filter(pk=user_pk, is_active=True).first()
    if user is None:
        return None
    return {"user": user, "session": claims.get("s")}


def prune() -> int:
    """Forget nonces of tickets that have expired anyway."""
    cutoff = timezone.now() - timedelta(seconds=2 * realtime_settings.TICKET_MAX_AGE)
    deleted, _ = TicketUse.objects.filter(used_at__lt=cutoff).delete()
    return deleted


aprune = in_lane(prune)
