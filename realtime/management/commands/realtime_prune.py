from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from realtime.conf import realtime_settings
from realtime.management.base import Command as BaseCommand
from realtime.storage import cleanup, retention


class Command(BaseCommand):
    help = """\
Delete what retention no longer keeps: events older than their stream's max_age or beyond
its max_events (REALTIME['RETENTION']), stream rows left with no events and no subscribers,
presence sessions that ended longer than PRESENCE_HISTORY_RETENTION ago (and anonymous
ones unless PRESENCE_HISTORY_ANONYMOUS), and the nonces of expired connection tickets. It
prints the rules first (the first pattern matching a stream's name decides), then what it
deleted.

Every server process already does this every PRUNE_INTERVAL seconds (60 by default), so
you need this command only when no server is running, after tightening a rule (to apply
it now), or to run retention from cron instead (then set PRUNE_INTERVAL very high).
Clients whose missed events were deleted get `subscribed` with recovered: false when they
resume (docs/retention.md)."""
    examples = """\
  manage.py realtime_prune            print the rules, delete, print the counts
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
            keep = retention.presence_history()
            kept = "forever" if keep is None else f"{_span(keep.total_seconds())} after they end"
            anonymous = "" if realtime_settings.PRESENCE_HISTORY_ANONYMOUS else ", signed-in only"
            self.stdout.write(f"Presence sessions: kept {kept}{anonymous}.")
        if options["rules"]:
            return
        pruned = cleanup.prune()
        if verbose:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Deleted {pruned['events']} event(s), {pruned['streams']} empty "
                    f"stream(s), {pruned['presence_sessions']} presence session(s) and "
                    f"{pruned['tickets']} ticket nonce(s)."
                )
            )


def _span(seconds: float) -> str:
    """``2592000`` -> ``30 days``: the largest whole unit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} s"
