"""``CaptureTriggers``: the migration operation that installs a live model's capture trigger.

``manage.py realtime_capture_triggers <app_label>`` writes a migration holding one per live
model of the app, with the SQL built from the registration then (``realtime.live.triggers``):
frozen like any migration, readable with ``sqlmigrate``, reversible (migrating back drops
the trigger and its function), and run only on PostgreSQL (a no-op elsewhere, so one
migration serves projects that test on SQLite). Regenerate it after changing the model's
``fields``, ``streams`` or ``events``: ``migrate`` and ``manage.py check --database default``
warn while the installed trigger differs from the registration (``realtime.W103``).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


class CaptureTriggers(migrations.operations.base.Operation):
    """Create (forwards) or drop (backwards) ``model_name``'s capture trigger, on PostgreSQL."""

    reversible = True
    reduces_to_sql = True

    def __init__(self, model_name: str, sql: str, reverse_sql: str) -> None:
        self.model_name = model_name
        self.sql = sql
        self.reverse_sql = reverse_sql

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs = {"model_name": self.model_name, "sql": self.sql, "reverse_sql": self.reverse_sql}
        return "CaptureTriggers", [], kwargs

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass  # the models' state is unchanged: a trigger is not a field

    def _run(self, schema_editor: Any, sql: str) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        if schema_editor.collect_sql:
            schema_editor.collected_sql.append(sql)
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)  # no parameters: the SQL's % signs are its own

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._run(schema_editor, self.sql)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        self._run(schema_editor, self.reverse_sql)

    def describe(self) -> str:
        return f"Install the live capture trigger of {self.model_name}"

    @property
    def migration_name_fragment(self) -> str:
        return f"capture_{self.model_name.lower()}"
