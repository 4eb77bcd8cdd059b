"""Server-Sent Events encoding: one message or comment, with CR, LF and NUL made harmless;
and ``SSEParser``, the reading side, for clients and tests."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched message: ``event`` is ``"message"`` when none was named."""

    event: str
    data: str
    id: str | None  # this message's own ``id:`` field, if it had one
    retry: int | None = None


class SSEParser:
    """Reads a ``text/event-stream`` body chunk by chunk, as EventSource does
    (https://html.spec.whatwg.org/#event-stream-interpretation); comments are skipped."""

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._fields: dict[str, str] = {}
        self.comments: list[str] = []
        self.retry: int | None = None  # the last ``retry:`` field, with data or without

    def feed(self, chunk: str) -> list[SSEMessage]:
        """The messages ``chunk`` completes; an unfinished line waits for the next chunk."""
        self._buffer += chunk.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._buffer = self._buffer.split("\n")
        messages = []
        for line in lines:
            message = self._line(line)
            if message is not None:
                messages.append(message)
        return messages

    def _line(self, line: str) -> SSEMessage | None:
        if line == "":
            data, fields = self._data, self._fields
            self._data, self._fields = [], {}
            if not data:
                return None  # a block without data lines dispatches nothing
            retry = fields.get("retry")
            return SSEMessage(
                fields.get("event") or "message",
                "\n".join(data),
                fields.get("id"),
                int(retry) if retry is not None else None,
            )
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name in ("event", "id") and "\0" not in value:
            self._fields[name] = value
        elif name == "retry" and value.isdigit():
            self._fields["retry"] = value
            self.retry = int(value)  # the reconnection time, as EventSource keeps it
        return None
