"""The publish queue: publishes wait here while disconnected (bounded), go out in order once
connected, and stay in flight until acknowledged; those whose ``ack`` was lost with the
connection are sent again with the same idempotency key, so the server stores them once
(the browser client's ``client/publish.js``). Over SSE the client POSTs them to the REST API
one at a time (``http.post``), retried with the same key on network errors, 5xx and 429.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.client.errors import ClientError
from realtime.client.items import PublishResult

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass
class Publish:
    """One publish, from ``publish()`` until it settles; ``frame_id`` while in flight."""

    stream: str
    event: str
    data: Any
    key: str | None
    ephemeral: bool
    future: asyncio.Future[PublishResult] = field(repr=False)
    frame_id: int | None = None

    def frame(self, frame_id: int) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "publish",
            "id": frame_id,
            "stream": self.stream,
            "event": self.event,
            "data": self.data,
        }
        if self.ephemeral:
            frame["ephemeral"] = True
        else:
            frame["key"] = self.key
        return frame

    def resolve(self, seq: int | None, duplicate: bool) -> None:
        if not self.future.done():
            self.future.set_result(PublishResult(self.stream, seq, duplicate, self.key))

    def reject(self, error: ClientError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class PublishQueue:
    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.waiting: deque[Publish] = deque()
        self.inflight: dict[int, Publish] = {}

    def add(
        self,
        stream: str,
        event: str,
        data: Any,
        *,
        key: str | None,
        ephemeral: bool,
        connected: bool,
    ) -> Publish:
        """Queue a publish (raises ``ClientError`` at once if it cannot wait)."""
        if key is not None and (ephemeral or not KEY_PATTERN.fullmatch(key)):
            raise ClientError(
                "An idempotency key is 1 to 64 of A-Z a-z 0-9 _ . : - (and not ephemeral).",
                code="invalid_event",
                stream=stream,
            )
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ClientError(f"Event data is not JSON: {exc}", code="invalid_event") from None
        if not connected:
            if ephemeral:
                raise ClientError(
                    "Not connected: ephemeral events are not queued.", code="disconnected"
                )
            if len(self.waiting) >= self.max_queue:
                raise ClientError(
                    f"{len(self.waiting)} publishes are already waiting for the connection.",
                    code="queue_full",
                )
        entry = Publish(
            stream,
            event,
            data,
            None if ephemeral else (key or uuid.uuid4().hex),
            ephemeral,
            asyncio.get_running_loop().create_future(),
        )
        self.waiting.append(entry)
        return entry

    def next(self) -> Publish | None:
        """The first publish waiting to be sent (those settled meanwhile are dropped)."""
        while self.waiting and self.waiting[0].future.done():
            self.waiting.popleft()
        return self.waiting[0] if self.waiting else None

    def sent(self, entry: Publish, frame_id: int) -> None:
        """``entry``, first in line, is going out as frame ``frame_id``: in flight."""
        if self.waiting and self.waiting[0] is entry:
            self.waiting.popleft()
        entry.frame_id = frame_id
        self.inflight[frame_id] = entry

    def unsent(self, entry: Publish) -> None:
        """Sending ``entry`` failed (the connection went): first in line again, unless the
        loss of the connection already put it back."""
        if entry.frame_id is not None and self.inflight.get(entry.frame_id) is entry:
            del self.inflight[entry.frame_id]
            entry.frame_id = None
            self.waiting.appendleft(entry)

    def acknowledged(self, frame: Mapping[str, Any]) -> bool:
        frame_id = frame.get("id")
        entry = self.inflight.pop(frame_id, None) if isinstance(frame_id, int) else None
        if entry is None:
            return False
        entry.resolve(frame.get("seq"), bool(frame.get("duplicate")))
        return True

    def refused(self, frame_id: Any, error: ClientError) -> bool:
        entry = self.inflight.pop(frame_id, None) if isinstance(frame_id, int) else None
        if entry is None:
            return False
        error.stream = entry.stream
        entry.reject(error)
        return True

    def connection_lost(self) -> None:
        """Unacknowledged publishes go back to the front of the queue, in the order sent,
        to be sent again with their keys; ephemeral ones fail (nothing replays them)."""
        lost = [self.inflight[k] for k in sorted(self.inflight)]
        self.inflight.clear()
        for entry in reversed(lost):
            if entry.ephemeral:
                entry.reject(ClientError("Lost with the connection.", code="disconnected"))
            else:
                entry.frame_id = None
                self.waiting.appendleft(entry)

    def reject_all(self, error: ClientError) -> None:
        for entry in [*self.waiting, *self.inflight.values()]:
            entry.reject(error)
        self.waiting.clear()
        self.inflight.clear()
