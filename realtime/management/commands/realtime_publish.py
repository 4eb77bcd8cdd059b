from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.core.publishing import publish
from realtime.exceptions import RealtimeError
from realtime.protocol import loads


class Command(BaseCommand):
    help = (
        "Publish one event to a stream, as your code would with realtime.publish(): it is "
        "stored with the stream's next seq and delivered to every connected subscriber."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("stream", help="Stream name, e.g. public:lobby or orders:42.")
        parser.add_argument("event", help="Event type, e.g. message.created.")
        parser.add_argument(
            "data",
            nargs="?",
            default="null",
            help='Event data as JSON, e.g. \'{"text": "hello"}\' (default: null).',
        )
        parser.add_argument(
            "--ephemeral",
            action="store_true",
            help="Do not store the event: no seq, no history, live subscribers only.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            data = loads(options["data"])
        except ValueError as exc:
            raise CommandError(f"DATA is not valid JSON: {exc}") from exc
        try:
            event = publish(
                options["stream"], options["event"], data, ephemeral=options["ephemeral"]
            )
        except RealtimeError as exc:
            raise CommandError(exc.message) from exc
        if event.seq is None:
            self.stdout.write(f"Sent ephemeral {event.event} to {options['stream']}.")
        else:
            self.stdout.write(
                self.style.SUCCESS(f"Published {options['stream']}#{event.seq} ({event.event}).")
            )
