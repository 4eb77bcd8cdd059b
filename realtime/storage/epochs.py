"""Epoch tokens: which history of a stream a position belongs to.

A stream that has no row yet (nobody published to it, or its emptied row was removed) is
not written to the database when a client subscribes: the hub answers with the epoch the
stream's row *will* get if it is created in the same hour, ``creation_epoch(name)``, and
head 0. The first publish creates the row with that same token, so a subscriber that
arrived first resumes with a plain "same epoch" check in the common case.

A creation epoch is ``HHHHHH`` (the hour it stands for, hex) followed by ten hex digits of
a hash of the name and the hour. ``realtime.reset()`` gives random epochs instead. Because
an emptied stream row is removed only once it is at least ``EMPTY_STREAM_MIN_AGE`` old
(``realtime.storage.store.prune_streams``), a position at seq 0 held under a creation epoch can be
carried over to another creation epoch of the same name up to ``CARRY_OVER_HOURS`` later:
no other history of the stream can have started and ended in between, so the subscriber
has missed nothing. Anything else that differs is a new history (``recovered: false``).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta

# A removed-and-recreated stream is at least this much younger than its first row...
EMPTY_STREAM_MIN_AGE = timedelta(hours=48)
# ...so a seq-0 position carries over between creation epochs this many hours apart, which
# leaves a day of margin for clocks that disagree between machines.
CARRY_OVER_HOURS = 24


def new_epoch() -> str:
    """A fresh random epoch (a reset): no position of any earlier history carries over."""
    return secrets.token_hex(8)


def creation_epoch(name: str, at: float | None = None) -> str:
    """The epoch of ``name``'s row if it is created at ``at`` (a Unix time; default now)."""
    return _for_hour(name, int((time.time() if at is None else at) // 3600))


def _for_hour(name: str, hour: int) -> str:
    digest = hashlib.blake2b(f"{hour}:{name}".encode(), digest_size=5).hexdigest()
    return f"{hour:06x}{digest}"


def _creation_hour(name: str, epoch: str) -> int | None:
    if len(epoch) != 16:
        return None
    try:
        hour = int(epoch[:6], 16)
    except ValueError:
        return None
    if _for_hour(name, hour) == epoch:
        return hour
    # The form PostgreSQL's capture triggers give the streams they create (migration 0004):
    # md5, which PostgreSQL has without an extension, instead of blake2b.
    digest = hashlib.md5(f"{hour}:{name}".encode(), usedforsecurity=False).hexdigest()[:10]
    return hour if epoch[6:] == digest else None


def carries_over(name: str, held: str, position: int, current: str, trimmed_seq: int) -> bool:
    """Whether a position (``held`` epoch, ``position``) is still exact in the history with
    epoch ``current`` whose oldest deleted seq is ``trimmed_seq``."""
    if held == current:
        return True
    if position != 0 or trimmed_seq != 0:
        return False
    then, now = _creation_hour(name, held), _creation_hour(name, current)
    return then is not None and now is not None and -1 <= now - then <= CARRY_OVER_HOURS
