"""Which of a batch's changes survived: a mark row per change, in the change's transaction.

A change made inside an inner ``atomic()`` block that rolled back must not be published, and
the batch must know that before the transaction commits (its events are stored in it).
Django keeps no public record of which savepoints rolled back, so each change leaves a row
in a temporary table of the connection that made it, in the same transaction and savepoint:
a savepoint that rolls back takes its rows with it, and at the end of the block the batch
reads back the rows that are left and deletes them.

The table is ``TEMPORARY`` (one per database connection, seen by no other), so it needs no
migration on any database a live model lives on. Each write creates it if it is missing,
in the same savepoint as the rows: a rolled-back savepoint that created it drops it with
them, and the next write makes it again.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connections
from django.db.backends.utils import CursorWrapper

TABLE = "realtime_live_marks"


def _ensure(cursor: CursorWrapper) -> None:
    cursor.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {TABLE} "
        "(batch varchar(32) NOT NULL, n integer NOT NULL)"
    )


def mark(using: str, batch: str, numbers: Iterable[int]) -> None:
    """Record changes ``numbers`` of ``batch`` in the current transaction of ``using``."""
    with connections[using].cursor() as cursor:
        _ensure(cursor)
        cursor.executemany(
            f"INSERT INTO {TABLE} (batch, n) VALUES (%s, %s)", [(batch, n) for n in numbers]
        )


def survivors(using: str, batch: str) -> set[int]:
    """The numbers of ``batch`` whose marks were not rolled back; forgets them all."""
    with connections[using].cursor() as cursor:
        _ensure(cursor)
        cursor.execute(f"SELECT n FROM {TABLE} WHERE batch = %s", [batch])
        found = {n for (n,) in cursor.fetchall()}
        cursor.execute(f"DELETE FROM {TABLE} WHERE batch = %s", [batch])
    return found
