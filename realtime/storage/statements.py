"""Cursors for the store's hot statements (the append, the group bump and insert).

On psycopg 3 they bind parameters on the server, so that PostgreSQL can keep the statements
prepared where the connection allows it (Django's ``OPTIONS["prepare_threshold"]``; off by
default, for transaction-mode poolers). Django's own cursors bind on the client
(``ClientCursor``), which psycopg never prepares: the append statement was then parsed and
planned on every publish, about a fifth of its time.

And one such cursor is kept per database connection. A new psycopg cursor builds its
loaders for every column of its first result, which with creating and closing it cost a
``publish()`` loop about 50 µs of CPU per event, a tenth of it. The kept cursor is wrapped as
Django wraps its cursors (``execute_wrapper`` and query logging apply; Django reads the
wrappers at each call); it is made again when the connection, or whether its queries are
logged (``assertNumQueries``, ``DEBUG``), changes. Other databases get Django's cursor.
"""

from __future__ import annotations

import weakref
from typing import Any

# psycopg connection -> (whether its queries were logged, the Django cursor wrapper kept).
_kept: weakref.WeakKeyDictionary[Any, tuple[bool, Any]] = weakref.WeakKeyDictionary()


class _Kept:
    """``with``-able like a Django cursor, without closing the kept cursor on exit."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def __enter__(self) -> Any:
        return self.cursor

    def __exit__(self, *exc: object) -> None:
        return None


def statement_cursor(connection: Any) -> Any:
    """A cursor for one of the store's hot statements on ``connection`` (a Django
    ``DatabaseWrapper``), to use as ``with statement_cursor(connection) as cursor:``."""
    if connection.vendor != "postgresql" or connection.settings_dict["OPTIONS"].get(
        "server_side_binding"
    ):
        return connection.cursor()
    try:
        from django.db.backends.postgresql import base
    except ImportError:  # pragma: no cover - no PostgreSQL driver, yet a PostgreSQL alias
        return connection.cursor()
    binding: Any = getattr(base, "ServerBindingCursor", None)  # psycopg 3 only
    if binding is None:
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw, logged = connection.connection, connection.queries_logged
    kept = _kept.get(raw)
    if kept is None or kept[0] != logged or kept[1].db is not connection or kept[1].cursor.closed:
        # ``db``: a pooled connection handed to another thread's ``DatabaseWrapper``.
        with connection.wrap_database_errors:
            kept = _kept[raw] = (logged, connection._prepare_cursor(binding(raw)))
    return _Kept(kept[1])
