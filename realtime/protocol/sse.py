"""Server-Sent Events encoding: one message or comment, with CR, LF and NUL made harmless."""

from __future__ import annotations


def _sse_field(value: str) -> str:
    # A CR, LF or NUL inside a field would end it early or be dropped by the browser.
    return value.replace("\r", " ").replace("\n", " ").replace("\0", " ")


def sse_message(data: str, *, event: str | None = None, id: str | None = None) -> str:
    """One SSE message; ``data`` spanning lines becomes several ``data:`` lines."""
    parts = []
    if id is not None:
        parts.append(f"id: {_sse_field(id)}\n")
    if event is not None:
        parts.append(f"event: {_sse_field(event)}\n")
    for line in data.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "").split("\n"):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts)


def sse_comment(text: str) -> str:
    return f": {_sse_field(text)}\n\n"


def sse_retry(delay_ms: int) -> str:
    """A block holding only a ``retry:`` field: reconnect after ``delay_ms`` milliseconds."""
    return f"retry: {int(delay_ms)}\n\n"
