from __future__ import annotations

import os
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.writer import MigrationWriter

from realtime.live import operations, receivers, triggers
from realtime.management.base import Command as BaseCommand

# The migration of realtime that creates the functions the triggers call.
FUNCTIONS = ("realtime", "0004_capture_functions")


class Command(BaseCommand):
    help = """\
Write a migration that installs PostgreSQL capture triggers for an app's live models, so
that changes made outside Django's ORM (raw SQL, psql, other programs) are published like
save() and delete() (docs/live-models.md#writes-outside-the-orm). The trigger's SQL is built
from each model's live.register(...) options now and frozen in the migration; run this again
after changing them (migrate and check --database warn while they differ: realtime.W103). The
migration does nothing on other databases; migrating back removes the triggers."""
    examples = """\
  manage.py realtime_capture_triggers tasks             every live model of the app
  manage.py realtime_capture_triggers tasks --model Task
  manage.py realtime_capture_triggers tasks --dry-run   print the migration"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("app_label")
        parser.add_argument("--model", action="append", default=[], help="Only this model.")
        parser.add_argument("--name", default=None, help="The migration's name.")
        parser.add_argument("--dry-run", action="store_true", help="Print, do not write.")

    def handle(self, *args: Any, **options: Any) -> None:
        label = options["app_label"]
        try:
            config = apps.get_app_config(label)
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        wanted = {name.lower() for name in options["model"]}
        found = [
            live
            for model, live in receivers.registry.items()
            if model._meta.app_label == label
            and (not wanted or model._meta.model_name in wanted)
            and live.capture
        ]
        if not found:
            raise CommandError(f"No live model with capture on in {config.label}.")
        ops = []
        for live in sorted(found, key=lambda live: live.label):
            try:
                install, remove = triggers.sql(live)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from exc
            ops.append(operations.CaptureTriggers(live.model.__name__, install, remove))
        loader = MigrationLoader(connection, ignore_no_migrations=True)
        leaves = loader.graph.leaf_nodes(label)
        if not leaves:
            raise CommandError(f"{label} has no migrations yet: run makemigrations first.")
        number = int(leaves[0][1].split("_")[0]) + 1
        name = options["name"] or f"capture_{'_'.join(op.model_name.lower() for op in ops)}"
        migration = type(
            "Migration",
            (migrations.Migration,),
            {"dependencies": [leaves[0], FUNCTIONS], "operations": ops},
        )(f"{number:04d}_{name}", label)
        writer = MigrationWriter(migration)
        if options["dry_run"]:
            self.stdout.write(writer.as_string())
            return
        os.makedirs(os.path.dirname(writer.path), exist_ok=True)
        with open(writer.path, "w", encoding="utf-8") as out:
            out.write(writer.as_string())
        self.stdout.write(f"Wrote {writer.path}")
