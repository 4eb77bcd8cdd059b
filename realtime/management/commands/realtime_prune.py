from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from realtime import retention, store
from realtime.management.base import Command as BaseCommand


class Command(BaseCommand):
    help = """\
Delete stored events that REALTIME['RETENTION'] no longer keeps: events older than their
stream's max_age, and events beyond its max_events. It prints the rules first (the first
pattern matching a stream's name decides), then how many events it deleted.

Every server process already does this every PRUNE_INTERVAL seconds (60 by default), so
you need this command only when no server is running, after tightening a rule (to apply
it now), or to run retention from cron instead (then set PRUNE_INTERVAL very high).
Clients whose missed events were deleted get `subscribed` with recovered: false when they
resume (docs/retention.md)."""
    examples = """\
  manage.py realtime_prune            print the rules, delete, print the count
  manage.py realtime_prune --rules    only print the rules in force
  */10 * * * * cd /srv/app && .venv/bin/python manage.py realtime_prune -v 0   (crontab)"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rules", action="store_true", help="Only print the retention rules in force."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbose = options["verbosity"] >= 1
        rules = retention.rules()
        if verbose or options["rules"]:
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
        if verbose:
            self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} event(s)."))
