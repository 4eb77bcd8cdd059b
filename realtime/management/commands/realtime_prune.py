from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime import retention, store


class Command(BaseCommand):
    help = (
        "Delete stored events that REALTIME['RETENTION'] no longer keeps (too old, or beyond "
        "a stream's max_events). Server processes also do this every PRUNE_INTERVAL seconds; "
        "run it from cron when no server is running, or after tightening a rule."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rules", action="store_true", help="Only print the retention rules in force."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rules = retention.rules()
        self.stdout.write("Retention rules (first match wins):")
        for rule in rules:
            events = "no limit" if rule.max_events is None else f"{rule.max_events} events"
            age = "no limit" if rule.max_age is None else f"{rule.max_age.total_seconds():g} s"
            self.stdout.write(f"  {rule.pattern:<30} max_events: {events:<14} max_age: {age}")
        if not rules:
            self.stdout.write("  (none: every stream keeps all its events)")
        if options["rules"]:
            return
        deleted = store.prune()
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} event(s)."))
