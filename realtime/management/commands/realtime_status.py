from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from realtime.core.gather import Gathered, gather
from realtime.management.base import Command as BaseCommand
from realtime.management.base import table
from realtime.storage.overview import BUSY_WINDOW, overview


def _seconds(text: str) -> float:
    moment = parse_datetime(text)
    return (moment - timezone.now()).total_seconds() if moment else 0.0


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


class Command(BaseCommand):
    help = """\
Show what the realtime service is doing right now: every server process (its lease, its
connections by transport, and, when it answers over the channel layer, its events and
deliveries per second and active alerts), totals, the most subscribed streams, presence,
and whether dead processes are being swept in time.

It reads the database, so it works with no server running. When a server's lease is live
it also asks the servers for their figures over the channel layer (at most --timeout
seconds; a server that does not answer is marked "not reporting")."""
    examples = """\
  manage.py realtime_status                 the tables
  manage.py realtime_status --json | jq .   everything, as JSON (for scripts and monitoring)
  manage.py realtime_status --top 25        more streams
  manage.py realtime_status --no-live       the database only (no channel layer)"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
        parser.add_argument(
            "--top", type=int, default=10, metavar="N", help="How many streams to list (10)."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=1.0,
            metavar="S",
            help="Seconds to wait for the servers' own figures (1).",
        )
        parser.add_argument(
            "--no-live",
            action="store_true",
            help="Do not ask the servers; show what the database holds.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        gathered = None if options["no_live"] else gather(options["timeout"])
        report = self.report(options["top"], gathered)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.print_tables(report)

    def report(self, top: int, gathered: Gathered | None) -> dict[str, Any]:
        view = overview(top)
        data = view.as_dict()
        replies = {r["server"]: r for r in (gathered.replies if gathered else [])}
        for server in data["servers"]:
            reply = replies.pop(server["id"], None)
            server["reporting"] = reply is not None
            if reply is not None:
                server["live"] = {
                    "connections": reply["stats"].get("connections", {}),
                    "subscriptions": reply["stats"].get("subscriptions", 0),
                    "rates": reply.get("rates") or {},
                    "alerts": reply.get("alerts") or [],
                }
        data["live"] = {
            "asked": gathered is not None,
            "expected": gathered.expected if gathered else None,
            "reporting": gathered.reporting if gathered else None,
            "seconds": round(gathered.elapsed, 3) if gathered else None,
            "error": gathered.error if gathered else None,
            # Processes that answered without a lease row (just swept, or a stale database).
            "unlisted": list(replies.values()),
        }
        return data

    def print_tables(self, data: dict[str, Any]) -> None:
        out = self.stdout.write
        servers = data["servers"]
        live = data["live"]
        alive = [s for s in servers if not s["expired"]]
        out(
            self.style.MIGRATE_HEADING(
                f"Servers: {len(alive)} live, {len(servers) - len(alive)} expired"
            )
        )
        rows = [["SERVER", "UP", "LEASE", "WEBSOCKET", "SSE", "EVENTS/S", "DELIVERIES/S", "ALERTS"]]
        for s in servers:
            left = _seconds(s["expires_at"])
            lease = f"{_span(left)} left" if left > 0 else f"expired {_span(left)} ago"
            figures = s.get("live")
            conns = figures["connections"] if figures else s["connections"]
            rates = figures["rates"] if figures else {}
            alerts = ", ".join(a["name"] for a in figures["alerts"]) if figures else ""
            if live["asked"] and not figures:
                alerts = "(not reporting)"
            rows.append(
                [
                    s["name"],
                    _span(_seconds(s["started_at"])),
                    lease,
                    str(conns.get("websocket", 0)),
                    str(conns.get("sse", 0)),
                    _rate(rates.get("published_per_second")),
                    _rate(rates.get("deliveries_per_second")),
                    alerts or "-",
                ]
            )
        if servers:
            for line in table(rows):
                out(line)
        else:
            out(
                "  No server process holds a lease (none is running, or none had a connection yet)."
            )

        c = data["connections"]
        presence = data["presence"]
        out("")
        out(
            f"Totals: {c['total']} connection{'s' if c['total'] != 1 else ''} "
            f"({c.get('websocket', 0)} WebSocket, {c.get('sse', 0)} SSE), "
            f"{data['users_online']} user{'s' if data['users_online'] != 1 else ''} online, "
            f"{presence['members']} presence member{'s' if presence['members'] != 1 else ''} "
            f"on {presence['streams']} stream{'s' if presence['streams'] != 1 else ''}"
        )

        out("")
        minutes = BUSY_WINDOW.total_seconds() / 60
        out(self.style.MIGRATE_HEADING("Streams (most subscribers)"))
        rows = [["STREAM", "SUBSCRIBERS", "LAST SEQ", f"EVENTS ({minutes:g} MIN)"]]
        for st in data["streams_by_subscribers"]:
            rows.append(
                [st["name"], str(st["subscribers"]), str(st["last_seq"]), str(st["events"])]
            )
        if len(rows) > 1:
            for line in table(rows):
                out(line)
        else:
            out("  No connection is subscribed to anything.")
        busy = [st for st in data["streams_by_events"] if st["events"]]
        if busy:
            out("")
            out(self.style.MIGRATE_HEADING(f"Streams (most events in the last {minutes:g} min)"))
            rows = [["STREAM", "EVENTS", "EVENTS/S", "LAST SEQ", "SUBSCRIBERS"]]
            for st in busy:
                rows.append(
                    [
                        st["name"],
                        str(st["events"]),
                        f"{st['events_per_second']:.2f}",
                        str(st["last_seq"]),
                        str(st["subscribers"]),
                    ]
                )
            for line in table(rows):
                out(line)

        out("")
        sweeper = data["sweeper"]
        if sweeper["expired_leases"]:
            out(
                self.style.WARNING(
                    f"Sweeper: {sweeper['expired_leases']} expired lease(s) not swept yet, the "
                    f"oldest for {sweeper['lag_seconds']:.0f} s (no live server is sweeping?)"
                )
            )
        else:
            out("Sweeper: on time (no expired lease waiting).")
        if not live["asked"]:
            out("Live figures: not asked (--no-live).")
        elif live["error"]:
            out(self.style.WARNING(f"Live figures: unavailable ({live['error']})."))
        elif live["expected"]:
            line = (
                f"Live figures: {live['reporting']} of {live['expected']} server(s) answered "
                f"in {live['seconds']:.2f} s."
            )
            complete = live["reporting"] >= live["expected"]
            out(line if complete else self.style.WARNING(line))
