"""The REST API's views: publish and read events, list streams, see presence and connections.

Synchronous DRF views (the ORM and ``realtime.publish`` are synchronous; under ASGI Django
runs them in a worker thread). Every one checks, in this order: the stream name (400), the
caller against the stream policy (401/403, never saying whether the stream exists), then
the input (400/413/415), then the stream's existence (404). Nothing is stored on any error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils.http import urlencode
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.api import serializers as s
from realtime.api.authentication import DEFAULT_AUTHENTICATION_CLASSES, is_server, is_staff
from realtime.api.errors import (
    INVALID_PARAMETER,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    APIError,
    exception_handler,
)
from realtime.api.parsers import StrictJSONParser
from realtime.api.permissions import StaffOrServer, require
from realtime.api.schema import IDEMPOTENCY_KEY, STREAM, APISchema, errors, operation
from realtime.conf import realtime_settings
from realtime.core import publishing
from realtime.core.policy import get_policy
from realtime.exceptions import RealtimeError
from realtime.models import Connection, Event, Stream
from realtime.protocol import INVALID_EVENT, MALFORMED_JSON, format_ts, normalize
from realtime.storage import store
from realtime.storage.presence import counts_only, members
from realtime.streams import validate_stream_name

# Streams examined per listing request when the policy filters them: the page may come back
# short, with ``next`` to go on from, rather than scan a huge table in one request.
LIST_SCAN_BUDGET = 5000


class RealtimeAPIView(APIView):
    """Base of the API's views: its own authentication, JSON only, the app's error format.

    Every policy class is set here, so the project's ``REST_FRAMEWORK`` defaults (which suit
    its own API) change nothing about this one. Each view method describes itself to the
    OpenAPI schema with ``realtime.api.schema.operation`` (drf-spectacular's ``extend_schema``).
    """

    authentication_classes = DEFAULT_AUTHENTICATION_CLASSES
    # The views ask the stream policy themselves (realtime.api.permissions); AllowAny also
    # tells the schema that anonymous callers may be allowed (public streams).
    permission_classes: list[Any] = [AllowAny]
    throttle_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    parser_classes = [StrictJSONParser]
    content_negotiation_class = DefaultContentNegotiation
    versioning_class = None
    schema = APISchema()

    def get_exception_handler(self) -> Any:
        return exception_handler

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        # Never inside ATOMIC_REQUESTS: a policy reads the database through Channels'
        # database_sync_to_async, which closes this thread's connection around each call
        # (right for the event loop's threads, fatal to an open request transaction).
        return transaction.non_atomic_requests(super().as_view(**initkwargs))


def _stream(name: str) -> str:
    try:
        return validate_stream_name(name)
    except RealtimeError as exc:
        raise APIError(400, exc.code, exc.message) from exc


def _query(request: Request, query_class: type[s.PageQuery]) -> dict[str, Any]:
    """The query parameters, validated by the serializer the schema documents them with."""
    query = query_class(data=request.query_params)
    if not query.is_valid():
        name, problems = next(iter(query.errors.items()))
        raise APIError(400, INVALID_PARAMETER, f"`{name}`: {problems[0]}")
    return dict(query.validated_data)


def _next_url(request: Request, **params: Any) -> str:
    query = {**request.query_params.dict(), **{k: v for k, v in params.items() if v is not None}}
    return str(request.build_absolute_uri(request.path + "?" + urlencode(query)))


def _event(row: Any, stream: str) -> dict[str, Any]:
    return {
        "stream": stream,
        "seq": row.seq,
        "event": row.event,
        "data": row.data,
        "ts": format_ts(row.ts),
    }


@dataclass(frozen=True)
class Publish:
    """A validated ``POST .../events/``: what to publish."""

    stream: str
    event: str
    data: Any
    key: str | None
    ephemeral: bool

    def sync(self) -> Event:
        return publishing.publish(
            self.stream, self.event, self.data, idempotency_key=self.key, ephemeral=self.ephemeral
        )

    async def run(self) -> Event:
        return await publishing.apublish(
            self.stream, self.event, self.data, idempotency_key=self.key, ephemeral=self.ephemeral
        )


def published(response: Response, stream: str, stored: Event) -> Response:
    """``response`` made the answer to a publish: the stored event, its epoch, ``duplicate``."""
    response.data = {
        **_event(stored, stream),
        "epoch": stored.stream.epoch,
        "duplicate": bool(stored.duplicate),
    }
    response.status_code = status.HTTP_200_OK if stored.duplicate else status.HTTP_201_CREATED
    response["Cache-Control"] = "no-store"
    return response


class StreamEventsView(RealtimeAPIView):
    """``POST`` publishes an event; ``GET`` pages through the stream's history."""

    @operation(
        operation_id="publishEvent",
        summary="Publish an event to a stream.",
        description="Stores the event with the stream's next seq and delivers it to every "
        "subscriber, as `realtime.publish()` does. Allowed when the stream policy allows "
        "`publish` for the caller, for staff users, and for server API tokens. A repeated "
        "idempotency key (`key`, or the `Idempotency-Key` header) answers 200 with the "
        "first event and `duplicate: true`, storing nothing.",
        parameters=[STREAM, IDEMPOTENCY_KEY],
        request=s.PublishSerializer,
        responses={
            201: OpenApiResponse(s.PublishedSerializer, "Published: the stored event."),
            200: OpenApiResponse(
                s.PublishedSerializer,
                "A repeated idempotency key: the first event, `duplicate: true`; nothing stored.",
            ),
            **errors(400, 401, 403, 413, 415),
        },
    )
    def post(self, request: Request, stream: str) -> Response:
        stream = _stream(stream)
        require(request, "publish", stream)
        if request.stream is None:  # no body (DRF would take it for an empty form)
            raise APIError(400, MALFORMED_JSON, "Send the event as a JSON object.")
        body = s.PublishSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = body.validated_data["key"]
        header = request.headers.get("Idempotency-Key")
        if header is not None:
            if key is not None and key != header:
                raise APIError(400, INVALID_EVENT, "`key` and the Idempotency-Key header differ.")
            key = s.PublishSerializer().validate_key(header)
        data = body.validated_data["data"]
        _, data_json = normalize(data)
        limit = realtime_settings.MAX_EVENT_SIZE
        if len(data_json.encode()) > limit:
            raise APIError(
                413, PAYLOAD_TOO_LARGE, f"Event data is larger than MAX_EVENT_SIZE ({limit} bytes)."
            )
        publish = Publish(
            stream, body.validated_data["event"], data, key, body.validated_data["ephemeral"]
        )
        if getattr(request._request, DEFERRED, False):
            response = Response(status=status.HTTP_202_ACCEPTED)
            response.publish = publish  # type: ignore[attr-defined]  # see events_view
            return response
        return published(Response(), publish.stream, publish.sync())

    @operation(
        operation_id="listEvents",
        summary="Read a stream's history, a page at a time.",
        description="Needs the `history` permission. Follow `next` until it is null.",
        parameters=[STREAM, s.HistoryQuery],
        responses={
            200: OpenApiResponse(s.HistorySerializer, "A page of events."),
            **errors(400, 401, 403, 404),
        },
    )
    def get(self, request: Request, stream: str) -> Response:
        stream = _stream(stream)
        require(request, "history", stream)
        query = _query(request, s.HistoryQuery)
        since, limit, epoch = query["since"], query["limit"], query.get("epoch") or None
        info = store.stream_info(stream)
        if info is None:
            raise APIError(404, NOT_FOUND, f"No stream {stream!r}.")
        recovered = store.resumes(info, epoch, since)
        start = since if recovered else info.trimmed_seq
        rows, now = store.read(stream, start, limit)
        if now is None or now.epoch != info.epoch:
            # Reset while we read: the rows may belong to either history. Start over.
            now = now or info
            rows, recovered, start = [], False, 0
        elif rows and rows[0].seq != start + 1:
            recovered = False  # retention deleted some of them meanwhile
        last = rows[-1].seq if rows else start
        more = bool(rows) and last < now.last_seq
        return Response(
            {
                "stream": stream,
                "epoch": now.epoch,
                "seq": now.last_seq,
                "since": since,
                "recovered": recovered,
                "events": [_event(row, stream) for row in rows],
                "next": _next_url(request, since=last, epoch=now.epoch) if more else None,
            },
            headers={"Cache-Control": "no-store"},
        )


class StreamListView(RealtimeAPIView):
    """``GET``: the streams the caller may subscribe to, by name, with their positions."""

    @operation(
        operation_id="listStreams",
        summary="List streams with their head seq and epoch.",
        description="Lists the stored streams the caller may `subscribe` to (staff users "
        "and server tokens see all), ordered by name. A page may hold fewer than `limit` "
        "streams when many were filtered out; follow `next` until it is null.",
        parameters=[s.StreamListQuery],
        responses={
            200: OpenApiResponse(s.StreamListSerializer, "A page of streams."),
            **errors(400, 401),
        },
    )
    def get(self, request: Request) -> Response:
        query = _query(request, s.StreamListQuery)
        limit, prefix, after = query["limit"], query.get("prefix"), query.get("after")
        rows = Stream.objects.order_by("name")
        if prefix:
            rows = rows.filter(name__startswith=prefix)
        if after:
            rows = rows.filter(name__gt=after)
        see_all = is_server(request) or is_staff(request)
        scan = limit + 1 if see_all else max(LIST_SCAN_BUDGET, limit + 1)
        candidates = list(rows[:scan])
        visible = candidates if see_all else self._visible(request, candidates, limit + 1)
        page = visible[:limit]
        if len(visible) > limit:
            next_after: str | None = page[-1].name
        elif not see_all and len(candidates) == scan:
            next_after = candidates[-1].name  # budget spent: go on from the last one examined
        else:
            next_after = None
        return Response(
            {
                "streams": [
                    {
                        "stream": row.name,
                        "epoch": row.epoch,
                        "seq": row.last_seq,
                        "trimmed_seq": row.trimmed_seq,
                    }
                    for row in page
                ],
                "next": _next_url(request, after=next_after) if next_after else None,
            },
            headers={"Cache-Control": "no-store"},
        )

    @staticmethod
    def _visible(request: Request, candidates: list[Stream], wanted: int) -> list[Stream]:
        """The candidates the policy lets the caller ``subscribe`` to, at most ``wanted``."""
        policy, user = get_policy(), request.user

        async def check() -> list[Stream]:
            found: list[Stream] = []
            for row in candidates:
                if await policy.has_permission("subscribe", user, row.name):
                    found.append(row)
                    if len(found) >= wanted:
                        break
            return found

        return async_to_sync(check)()


class PresenceView(RealtimeAPIView):
    """``GET``: who is present on a stream, as the ``presence.state`` frame has it."""

    @operation(
        operation_id="getPresence",
        summary="The members present on a stream.",
        description="Needs the `presence` permission. On PRESENCE_COUNTS_ONLY streams, "
        "`members` is null (except for staff users and server tokens).",
        parameters=[STREAM],
        responses={
            200: OpenApiResponse(s.PresenceSerializer, "Who is present."),
            **errors(400, 401, 403),
        },
    )
    def get(self, request: Request, stream: str) -> Response:
        stream = _stream(stream)
        require(request, "presence", stream)
        present = members(stream)
        count = {
            "members": len(present),
            "connections": sum(len(member.metas) for member in present),
        }
        hidden = counts_only(stream) and not (is_server(request) or is_staff(request))
        listing = None
        if not hidden:
            # As in presence frames: refs and metadata, never connection ids (which are the
            # connections' secrets for the heartbeat endpoint).
            listing = {
                member.key: {"metas": [{"ref": m.ref, "meta": m.meta} for m in member.metas]}
                for member in present
            }
        return Response(
            {"stream": stream, "members": listing, "count": count},
            headers={"Cache-Control": "no-store"},
        )


class ConnectionListView(RealtimeAPIView):
    """``GET``: the open connections on every process (staff users and server tokens)."""

    permission_classes = [StaffOrServer]

    @operation(
        operation_id="listConnections",
        summary="Open WebSocket and SSE connections, newest first.",
        description="For staff users and server tokens only.",
        parameters=[s.ConnectionListQuery],
        responses={
            200: OpenApiResponse(s.ConnectionListSerializer, "A page of connections."),
            **errors(400, 401, 403),
        },
    )
    def get(self, request: Request) -> Response:
        query = _query(request, s.ConnectionListQuery)
        limit, offset = query["limit"], query["offset"]
        rows = Connection.objects.select_related("server").order_by("-connected_at", "id")
        user = query.get("user")
        if user:
            rows = rows.filter(user_id=user) if user.isdigit() else rows.none()
        transport = query.get("transport")
        if transport:
            rows = rows.filter(transport=transport)
        total = rows.count()
        page = list(rows[offset : offset + limit])
        more = offset + len(page) < total
        return Response(
            {
                "count": total,
                "connections": [
                    {
                        "id": row.id,
                        "transport": row.transport,
                        "user": None if row.user_id is None else str(row.user_id),
                        "server": str(row.server),
                        "remote_addr": row.remote_addr,
                        "user_agent": row.user_agent,
                        "connected_at": row.connected_at.isoformat(),
                    }
                    for row in page
                ],
                "next": _next_url(request, offset=offset + len(page)) if more else None,
            },
            headers={"Cache-Control": "no-store"},
        )


__all__ = [
    "ConnectionListView",
    "PresenceView",
    "StreamEventsView",
    "StreamListView",
]


# Set on the request by ``events_view``: validate, but leave the publish to it.
DEFERRED = "realtime_deferred_publish"
_events_sync_view = StreamEventsView.as_view()


@csrf_exempt  # as DRF's views are: SessionAuthentication checks CSRF itself
@transaction.non_atomic_requests
async def events_view(request: HttpRequest, stream: str) -> HttpResponse:
    """``streams/<stream>/events/``: ``StreamEventsView``, with a ``POST``'s publish group
    committed.

    DRF views are sync, and under ASGI Django runs every sync view of a process on one
    thread: publishes over the API would commit one after another. Here the view still does
    all of the checking on that thread, then hands the publish to ``apublish`` on the event
    loop, where concurrent requests (and client frames) share a transaction
    (``realtime.groupcommit``) while the thread takes the next request.
    """
    if request.method != "POST":
        return await sync_to_async(_events_sync_view)(request, stream=stream)  # type: ignore[no-any-return]
    setattr(request, DEFERRED, True)
    response: Response = await sync_to_async(_events_sync_view)(request, stream=stream)
    publish: Publish | None = getattr(response, "publish", None)
    if publish is None:
        return response  # refused, with the view's answer
    try:
        stored = await publish.run()
    except RealtimeError as exc:
        refusal = exception_handler(exc, {})
        assert refusal is not None
        response.data, response.status_code = refusal.data, refusal.status_code
        return response
    return published(response, stream, stored)


# The schema generator finds the view (and its extend_schema) through these, as on DRF's own
# views.
events_view.cls = StreamEventsView  # type: ignore[attr-defined]
events_view.initkwargs = {}  # type: ignore[attr-defined]
