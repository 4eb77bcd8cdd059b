"""Resume cursors: the SSE ``id`` that holds a connection's (epoch, seq) in each stream."""

from __future__ import annotations

import base64
import binascii
import json

from realtime.exceptions import ProtocolError
from realtime.protocol.codes import INVALID_CURSOR

CURSOR_PREFIX = "1."


# Browsers send the cursor back in a header, and servers cap header lines (Twisted, under
# daphne, at 16 KiB): an event stream whose cursor could outgrow this is refused up front.
MAX_CURSOR_LENGTH = 8192


def max_cursor_length() -> int:
    return MAX_CURSOR_LENGTH


def largest_cursor(streams: list[str]) -> int:
    """The length of the longest cursor an event stream of ``streams`` can carry."""
    return len(encode_cursor({stream: ("f" * 32, 2**63 - 1) for stream in streams}))


Position = tuple[str, int]  # (epoch, seq)


def encode_cursor(positions: dict[str, Position]) -> str:
    """An opaque SSE ``id`` holding each stream's (epoch, seq)."""
    payload = json.dumps(
        [[stream, epoch, seq] for stream, (epoch, seq) in positions.items()],
        separators=(",", ":"),
    ).encode()
    return CURSOR_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> dict[str, Position]:
    """Inverse of ``encode_cursor``; ``ProtocolError(invalid_cursor)`` for anything else."""
    invalid = ProtocolError("The resume cursor is not one this server issued.", code=INVALID_CURSOR)
    if len(cursor) > max_cursor_length() or not cursor.startswith(CURSOR_PREFIX):
        raise invalid
    body = cursor[len(CURSOR_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        entries = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise invalid from None
    if not isinstance(entries, list):
        raise invalid
    positions: dict[str, Position] = {}
    for entry in entries:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], str)
            or isinstance(entry[2], bool)
            or not isinstance(entry[2], int)
            or entry[2] < 0
        ):
            raise invalid
        positions[entry[0]] = (entry[1], entry[2])
    return positions
