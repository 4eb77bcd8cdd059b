"""Which writer publishes a change on PostgreSQL: the ORM's Python path, or the capture trigger.

Every ORM write of a live model (``save()``, a deletion, the captured bulk paths) publishes
from Python, with the registration's own payload code. The capture triggers
(``realtime.live.triggers``) are for every other write — raw SQL, ``psql``, other programs —
and must leave these alone, or the change would be published twice. ``orm_write`` tells them:
it sets the transaction-local setting ``realtime.orm_write`` to ``on`` around the ORM's
statements (``set_config(..., true)``), and the triggers skip rows written while it is on.
It is reset right after, so raw SQL later in the same transaction is captured again. A
rolled-back savepoint reverts the setting with everything else.

The cost is two short statements per ORM write of a live model on PostgreSQL (nothing on
other databases). Models whose capture is off (``capture=False``, ``LIVE_CAPTURE_OFF``) are
guarded too: their bulk writes are then published by neither path, as the setting says.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections, transaction

SETTING = "realtime.orm_write"
_DEPTH = "_realtime_orm_write_depth"


def _set(connection: Any, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [SETTING, value])


@contextmanager
def orm_write(using: str) -> Iterator[None]:
    """Mark the ORM's writes in the block, on ``using``, as published by Python. Re-entrant:
    a deletion's ``SET_NULL`` update runs inside the deletion's block."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        yield
        return
    # A transaction-local setting outside a transaction would last one statement: make sure
    # there is one (free inside the caller's atomic block: no savepoint).
    with transaction.atomic(using=using, savepoint=False):
        depth = getattr(connection, _DEPTH, 0)
        if depth == 0:
            _set(connection, "on")
        setattr(connection, _DEPTH, depth + 1)
        failed = False
        try:
            yield
        except BaseException:
            failed = True  # the transaction is aborted: its rollback reverts the setting
            raise
        finally:
            setattr(connection, _DEPTH, depth)
            if depth == 0 and not failed:
                _set(connection, "")
