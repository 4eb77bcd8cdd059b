"""What the app's management commands share: help text laid out as written, with examples."""

from __future__ import annotations

from argparse import RawDescriptionHelpFormatter
from typing import Any

from django.core.management.base import BaseCommand, CommandParser, DjangoHelpFormatter


class HelpFormatter(DjangoHelpFormatter, RawDescriptionHelpFormatter):
    """Django's option order; the description and examples keep their line breaks."""


class Command(BaseCommand):
    """A command whose ``help`` and ``examples`` are shown by ``--help`` as written."""

    examples = ""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("formatter_class", HelpFormatter)
        if self.examples:
            kwargs.setdefault("epilog", "examples:\n" + self.examples.rstrip())
        return super().create_parser(prog_name, subcommand, **kwargs)


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows of cells as aligned text lines; the first row is the header."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
