"""The REST API (``realtime.api``): in-process with DRF's test client — every endpoint with
good and bad input — and end to end on real daphne processes, whose WebSocket subscribers
receive what the API publishes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import yaml
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.middleware.csrf import _get_new_csrf_string, _mask_cipher_secret
from django.urls import path, reverse
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.settings import patched_settings, spectacular_settings
from drf_spectacular.validation import validate_schema
from jsonschema import ValidationError
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_openapi
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

import realtime
from realtime.api.authentication import match_api_token
from realtime.api.schema import SETTINGS, APISchemaGenerator
from realtime.api.views import RealtimeAPIView
from realtime.models import Event, Stream
from realtime.storage import presence, registry, tickets
from tests.servers import WSClient, settings_env

User = get_user_model()
SERVER_TOKEN = "server-token-" + "x" * 32
OTHER_TOKEN = "rotated-token-" + "y" * 32
HOST = "127.0.0.1"

RULES = {
    "public:*": "public",
    "chat:*": {
        "subscribe": "authenticated",
        "history": "authenticated",
        "presence": "authenticated",
        "publish": "authenticated",
    },
    "user:{user_id}": "owner",
    "staff:*": "staff",
    "sub:*": {"subscribe": "anyone"},
}


@pytest.fixture(autouse=True)
def api_settings(settings: Any) -> None:
    settings.REALTIME = {
        **settings.REALTIME,
        "RULES": RULES,
        "API_TOKENS": [SERVER_TOKEN, OTHER_TOKEN],
    }


def url(name: str, **kwargs: str) -> str:
    return reverse(f"realtime:api:{name}", kwargs=kwargs)


def events_url(stream: str) -> str:
    return url("events", stream=stream)


def client(**credentials: Any) -> APIClient:
    api = APIClient(enforce_csrf_checks=True, HTTP_HOST=HOST)
    if credentials:
        api.credentials(**credentials)
    return api


def server_client() -> APIClient:
    return client(HTTP_AUTHORIZATION=f"Bearer {SERVER_TOKEN}")


def session_client(user: Any, *, csrf: bool = True) -> APIClient:
    """Signed in with a session cookie, sending the CSRF token as a page would."""
    api = client()
    api.force_login(user)
    if csrf:
        secret = _get_new_csrf_string()
        api.cookies["csrftoken"] = secret
        api.credentials(HTTP_X_CSRFTOKEN=_mask_cipher_secret(secret))
    return api


def stored(stream: str | None = None) -> list[tuple[str, int, str]]:
    rows = Event.objects.order_by("stream__name", "seq")
    if stream is not None:
        rows = rows.filter(stream__name=stream)
    return list(rows.values_list("stream__name", "seq", "event"))


def error(response: Any) -> tuple[int, str]:
    """``(status, code)`` of an error response, checking the error format."""
    assert response["Content-Type"] == "application/json", response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


def publish(api: APIClient, stream: str, body: Any, **extra: Any) -> Any:
    return api.post(events_url(stream), json.dumps(body), content_type="application/json", **extra)


@pytest.fixture
def ada(db: None) -> Any:
    return User.objects.create_user("ada", password="pw")


@pytest.fixture
def grace(db: None) -> Any:
    return User.objects.create_user("grace", password="pw", is_staff=True)


# --- publishing: who may -------------------------------------------------------------------
def test_publish_with_a_server_token(db: None) -> None:
    response = publish(server_client(), "orders:1", {"event": "order.paid", "data": {"n": 1}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body == {
        "stream": "orders:1",
        "seq": 1,
        "event": "order.paid",
        "data": {"n": 1},
        "ts": body["ts"],
        "epoch": Stream.objects.get(name="orders:1").epoch,
        "duplicate": False,
    }
    assert body["ts"].endswith("Z")
    assert response["Cache-Control"] == "no-store"
    assert stored() == [("orders:1", 1, "order.paid")]
    # Either configured token works (rotation); data defaults to null.
    api = client(HTTP_AUTHORIZATION=f"Bearer {OTHER_TOKEN}")
    response = publish(api, "orders:1", {"event": "order.shipped"})
    assert (response.status_code, response.json()["seq"], response.json()["data"]) == (201, 2, None)


def test_ephemeral_publish_is_sent_not_stored(db: None) -> None:
    body = {"event": "cursor.moved", "data": {"x": 1}, "ephemeral": True}
    response = publish(server_client(), "orders:1", body)
    assert response.status_code == 201, response.content
    assert (response.json()["seq"], response.json()["data"]) == (None, {"x": 1})
    assert stored() == []


def test_publish_follows_the_stream_policy(ada: Any, grace: Any) -> None:
    # chat:* lets signed-in users publish: session (with CSRF), token, ticket.
    response = publish(session_client(ada), "chat:1", {"event": "msg", "data": "hi"})
    assert response.status_code == 201, response.content
    token = Token.objects.create(user=ada)
    for scheme in ("Token", "Bearer"):
        api = client(HTTP_AUTHORIZATION=f"{scheme} {token.key}")
        assert publish(api, "chat:1", {"event": "msg"}).status_code == 201
    ticket = tickets.issue(ada)
    api = client(HTTP_AUTHORIZATION=f"Ticket {ticket}")
    assert publish(api, "chat:1", {"event": "msg"}).status_code == 201
    # Nobody but staff and servers may publish to public:* or to unlisted streams.
    assert error(publish(session_client(ada), "public:news", {"event": "x"})) == (403, "forbidden")
    assert error(publish(session_client(ada), "orders:1", {"event": "x"})) == (403, "forbidden")
    for stream in ("public:news", "orders:1"):
        assert publish(session_client(grace), stream, {"event": "x"}).status_code == 201
        assert publish(server_client(), stream, {"event": "x"}).status_code == 201
    assert [s for s, _, _ in stored()].count("chat:1") == 4
    assert len(stored()) == 8


def test_publish_refusals_store_nothing(ada: Any) -> None:
    body = {"event": "msg"}
    # Anonymous: 401 (signing in might help), with a challenge.
    response = publish(client(), "chat:1", body)
    assert error(response) == (401, "forbidden")
    assert response["WWW-Authenticate"].startswith("Bearer")
    # A session without the CSRF token is refused.
    assert error(publish(session_client(ada, csrf=False), "chat:1", body))[0] == 403
    # Wrong credentials never fall back to anonymous.
    for header in ("Token nope", "Bearer nope", f"Bearer {SERVER_TOKEN[:-1]}", "Ticket nope"):
        api = client(HTTP_AUTHORIZATION=header)
        assert error(publish(api, "public:x", body)) == (401, "invalid_credentials"), header
    # A ticket works once.
    ticket = tickets.issue(ada)
    api = client(HTTP_AUTHORIZATION=f"Ticket {ticket}")
    assert publish(api, "chat:1", body).status_code == 201
    assert error(publish(api, "chat:1", body)) == (401, "invalid_credentials")
    # An inactive user's token is refused.
    token = Token.objects.create(user=User.objects.create_user("gone", is_active=False))
    api = client(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert error(publish(api, "chat:1", body)) == (401, "invalid_credentials")
    assert stored() == [("chat:1", 1, "msg")]


@pytest.mark.parametrize(
    ("stream", "body", "expected"),
    [
        ("bad name", {"event": "x"}, (400, "invalid_stream")),
        ("-x", {"event": "x"}, (400, "invalid_stream")),
        ("a" * 201, {"event": "x"}, (400, "invalid_stream")),
        ("orders:1", ["event", "x"], (400, "invalid_frame")),
        ("orders:1", {"data": 1}, (400, "invalid_frame")),
        ("orders:1", {"event": 5}, (400, "invalid_event")),
        ("orders:1", {"event": ""}, (400, "invalid_event")),
        ("orders:1", {"event": "has space"}, (400, "invalid_event")),
        ("orders:1", {"event": "realtime.welcome"}, (400, "invalid_event")),
        ("orders:1", {"event": "presence.join"}, (400, "invalid_event")),
        ("orders:1", {"event": "x", "key": "no spaces"}, (400, "invalid_event")),
        ("orders:1", {"event": "x", "key": "k" * 65}, (400, "invalid_event")),
        ("orders:1", {"event": "x", "data": "\ud800"}, (400, "invalid_event")),
        ("orders:1", {"event": "x", "data": [[[[[[[[[[1]]]]]]]]]]}, (400, "too_deep")),
    ],
)
def test_publish_bad_input_is_400_and_stores_nothing(
    db: None, settings: Any, stream: str, body: Any, expected: tuple[int, str]
) -> None:
    settings.REALTIME = {**settings.REALTIME, "MAX_JSON_DEPTH": 8}
    assert error(publish(server_client(), stream, body)) == expected
    assert stored() == []
    assert not Stream.objects.exists()


def test_publish_malformed_bodies(db: None) -> None:
    api = server_client()
    path = events_url("orders:1")
    for raw in (b"{", b"", b'{"event": "x", "data": NaN}', b"\xff\xfe", b"[1,]"):
        response = api.post(path, raw, content_type="application/json")
        assert error(response) == (400, "malformed_json"), raw
    response = api.post(path, {"event": "x"})  # a form, not JSON
    assert error(response) == (415, "unsupported_media_type")
    response = api.post(path, "event=x", content_type="text/plain")
    assert error(response) == (415, "unsupported_media_type")
    response = api.get(path.replace("events/", "events/nope/"))
    assert response.status_code == 404
    response = api.put(path, "{}", content_type="application/json")
    assert error(response) == (405, "method_not_allowed")
    assert stored() == []


def test_publish_oversize_is_413_and_stores_nothing(db: None, settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "MAX_EVENT_SIZE": 1000}
    api = server_client()
    # The data, compact, must fit MAX_EVENT_SIZE...
    assert publish(api, "orders:1", {"event": "x", "data": "a" * 990}).status_code == 201
    response = publish(api, "orders:1", {"event": "x", "data": "a" * 1000})
    assert error(response) == (413, "payload_too_large")
    # ... and multi-byte characters count as bytes.
    assert error(publish(api, "orders:1", {"event": "x", "data": "é" * 500}))[0] == 413
    # A body far over the limit is refused before it is read or parsed.
    response = api.post(events_url("orders:1"), b"[" * 10_000, content_type="application/json")
    assert error(response) == (413, "payload_too_large")
    response = api.post(
        events_url("orders:1"),
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH="9999999",
    )
    assert error(response) == (413, "payload_too_large")
    assert stored() == [("orders:1", 1, "x")]


def test_idempotency_key_in_body_or_header(db: None) -> None:
    api = server_client()
    first = publish(api, "orders:1", {"event": "paid", "data": 1, "key": "pay-1"})
    assert (first.status_code, first.json()["duplicate"]) == (201, False)
    again = publish(api, "orders:1", {"event": "paid", "data": 2}, HTTP_IDEMPOTENCY_KEY="pay-1")
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}  # the first event, data 1
    both = publish(api, "orders:1", {"event": "paid", "key": "a"}, HTTP_IDEMPOTENCY_KEY="b")
    assert error(both) == (400, "invalid_event")
    bad = publish(api, "orders:1", {"event": "paid"}, HTTP_IDEMPOTENCY_KEY="not valid")
    assert error(bad) == (400, "invalid_event")
    assert stored() == [("orders:1", 1, "paid")]


# --- history --------------------------------------------------------------------------------
def test_history_pages_with_since_and_limit(ada: Any) -> None:
    for n in range(5):
        realtime.publish("chat:1", "msg", {"n": n})
    api = session_client(ada)
    response = api.get(events_url("chat:1"), {"limit": 2})
    assert response.status_code == 200
    page = response.json()
    epoch = Stream.objects.get(name="chat:1").epoch
    assert {k: page[k] for k in ("stream", "epoch", "seq", "since", "recovered")} == {
        "stream": "chat:1",
        "epoch": epoch,
        "seq": 5,
        "since": 0,
        "recovered": True,
    }
    seqs = [e["seq"] for e in page["events"]]
    assert seqs == [1, 2]
    assert page["events"][0] == {
        "stream": "chat:1",
        "seq": 1,
        "event": "msg",
        "data": {"n": 0},
        "ts": page["events"][0]["ts"],
    }
    while page["next"]:
        assert page["next"].startswith(f"http://{HOST}/realtime/api/streams/chat:1/events/?")
        page = api.get(page["next"]).json()
        assert page["recovered"] is True
        seqs += [e["seq"] for e in page["events"]]
    assert seqs == [1, 2, 3, 4, 5]
    page = api.get(events_url("chat:1"), {"since": 5}).json()
    assert (page["events"], page["next"], page["recovered"]) == ([], None, True)


def test_history_says_when_it_cannot_recover(ada: Any, settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "RETENTION": {"chat:*": {"max_events": 3}}}
    for n in range(6):
        realtime.publish("chat:1", "msg", n)
    api = session_client(ada)
    page = api.get(events_url("chat:1"), {"since": 1}).json()
    assert page["recovered"] is False  # 2 and 3 are gone: the page starts at the oldest
    assert [e["seq"] for e in page["events"]] == [4, 5, 6]
    page = api.get(events_url("chat:1"), {"since": 3}).json()
    assert (page["recovered"], [e["seq"] for e in page["events"]]) == (True, [4, 5, 6])
    page = api.get(events_url("chat:1"), {"since": 4, "epoch": "0123456789abcdef"}).json()
    assert (page["recovered"], [e["seq"] for e in page["events"]]) == (False, [4, 5, 6])
    page = api.get(events_url("chat:1"), {"since": 99}).json()
    assert (page["recovered"], [e["seq"] for e in page["events"]]) == (False, [4, 5, 6])


def test_history_errors(ada: Any) -> None:
    realtime.publish("orders:1", "x")
    api = session_client(ada)
    # Unknown but readable: 404. Not readable: 403 whether it exists or not.
    assert error(api.get(events_url("chat:nope"))) == (404, "not_found")
    assert error(api.get(events_url("orders:1"))) == (403, "forbidden")
    assert error(api.get(events_url("orders:2"))) == (403, "forbidden")
    assert error(client().get(events_url("chat:nope"))) == (401, "forbidden")
    # subscribe alone is not history.
    assert error(client().get(events_url("sub:x"))) == (401, "forbidden")
    assert error(api.get(events_url("bad name"))) == (400, "invalid_stream")
    for params in ({"since": "-1"}, {"since": "x"}, {"limit": "0"}, {"limit": "1001"}):
        assert error(api.get(events_url("chat:1"), params)) == (400, "invalid_parameter")
    # Integers are ASCII digits, nothing else Python's int() would take; at most 64 bits.
    for raw in ("+1", " 1", "1_0", "5.0", "\u0663", "9" * 30):
        response = api.get(events_url("chat:1"), {"since": raw})
        assert error(response) == (400, "invalid_parameter"), raw
    # An empty parameter is an absent one.
    assert error(api.get(events_url("chat:nope"), {"since": "", "limit": ""}))[0] == 404
    # Server tokens read everything.
    assert server_client().get(events_url("orders:1")).json()["seq"] == 1


# --- streams, presence, connections ----------------------------------------------------------
def test_stream_list_shows_what_the_caller_may_subscribe_to(ada: Any, grace: Any) -> None:
    for stream in ("public:a", "public:b", "chat:1", "orders:1", f"user:{ada.pk}", "staff:x"):
        realtime.publish(stream, "x")

    def names(api: APIClient, **params: Any) -> list[str]:
        response = api.get(url("streams"), params)
        assert response.status_code == 200, response.content
        return [s["stream"] for s in response.json()["streams"]]

    assert names(client()) == ["public:a", "public:b"]
    assert names(session_client(ada)) == ["chat:1", "public:a", "public:b", f"user:{ada.pk}"]
    everything = sorted(Stream.objects.values_list("name", flat=True))
    assert names(session_client(grace)) == everything
    assert names(server_client()) == everything
    assert names(server_client(), prefix="public:") == ["public:a", "public:b"]
    row = server_client().get(url("streams"), {"prefix": "chat:"}).json()["streams"][0]
    stream = Stream.objects.get(name="chat:1")
    assert row == {"stream": "chat:1", "epoch": stream.epoch, "seq": 1, "trimmed_seq": 0}
    # Paging: follow next.
    api, seen = server_client(), []
    page = api.get(url("streams"), {"limit": 4}).json()
    seen += [s["stream"] for s in page["streams"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [s["stream"] for s in page["streams"]]
    assert seen == everything
    assert error(api.get(url("streams"), {"limit": "abc"})) == (400, "invalid_parameter")
    # Refused before the database sees it (PostgreSQL cannot hold a NUL in a string).
    assert error(api.get(url("streams"), {"prefix": "a\x00"})) == (400, "invalid_parameter")


def test_presence(ada: Any, grace: Any, settings: Any) -> None:
    registry.register_server("srv", "chan")
    presence.join("chat:1", str(ada.pk), ada.pk, "conn-a1", "srv", {"name": "Ada"})
    presence.join("chat:1", str(ada.pk), ada.pk, "conn-a2", "srv", {"name": "Ada, tab 2"})
    presence.join("chat:1", "anon:x", None, "conn-x", "srv", {})
    response = session_client(ada).get(url("presence", stream="chat:1"))
    assert response.status_code == 200
    body = response.json()
    assert body["stream"] == "chat:1"
    assert body["count"] == {"members": 2, "connections": 3}
    assert set(body["members"]) == {str(ada.pk), "anon:x"}
    metas = body["members"][str(ada.pk)]["metas"]
    assert [m["meta"] for m in metas] == [{"name": "Ada"}, {"name": "Ada, tab 2"}]
    assert "conn-a1" not in response.content.decode()  # connection ids are secrets
    # Nobody there: an empty list, not 404.
    empty = session_client(ada).get(url("presence", stream="chat:2")).json()
    assert empty == {"stream": "chat:2", "members": {}, "count": {"members": 0, "connections": 0}}
    assert error(client().get(url("presence", stream="chat:1"))) == (401, "forbidden")
    assert error(session_client(ada).get(url("presence", stream="orders:1")))[0] == 403
    settings.REALTIME = {**settings.REALTIME, "PRESENCE_COUNTS_ONLY": ["chat:*"]}
    body = session_client(ada).get(url("presence", stream="chat:1")).json()
    assert body["members"] is None and body["count"]["members"] == 2
    assert session_client(grace).get(url("presence", stream="chat:1")).json()["members"]


def test_connections_are_for_staff_and_servers(ada: Any, grace: Any) -> None:
    registry.register_server("srv", "chan")
    registry.add_connection("c1", "srv", ada.pk, "websocket", "10.0.0.1", "Firefox")
    registry.add_connection("c2", "srv", None, "sse", "10.0.0.2", "curl")
    assert error(client().get(url("connections"))) == (401, "forbidden")
    assert error(session_client(ada).get(url("connections"))) == (403, "forbidden")
    body = session_client(grace).get(url("connections")).json()
    assert body["count"] == 2 and body["next"] is None
    assert {c["id"] for c in body["connections"]} == {"c1", "c2"}
    first = next(c for c in body["connections"] if c["id"] == "c1")
    assert first["user"] == str(ada.pk) and first["transport"] == "websocket"
    body = server_client().get(url("connections"), {"transport": "sse"}).json()
    assert [c["id"] for c in body["connections"]] == ["c2"]
    body = server_client().get(url("connections"), {"user": str(ada.pk), "limit": 1}).json()
    assert [c["id"] for c in body["connections"]] == ["c1"]
    body = server_client().get(url("connections"), {"limit": 1}).json()
    assert body["next"] and server_client().get(body["next"]).json()["next"] is None
    assert error(server_client().get(url("connections"), {"transport": "pigeon"}))[0] == 400


# --- server tokens and the schema ------------------------------------------------------------
def test_api_tokens_must_be_long_and_are_compared_in_full(db: None, settings: Any) -> None:
    assert match_api_token(SERVER_TOKEN) is not None
    assert match_api_token(SERVER_TOKEN + "x") is None
    assert match_api_token("") is None
    settings.REALTIME = {**settings.REALTIME, "API_TOKENS": ["short"]}
    with pytest.raises(ImproperlyConfigured, match="at least 32"):
        match_api_token("short")
    from django.core.management.base import SystemCheckError

    with pytest.raises(SystemCheckError, match=r"realtime\.E001"):
        call_command("check")
    settings.REALTIME = {**settings.REALTIME, "API_TOKENS": SERVER_TOKEN}
    with pytest.raises(ImproperlyConfigured, match="list"):
        match_api_token(SERVER_TOKEN)


def schema_document() -> dict[str, Any]:
    """``GET api/schema/``, checked: valid OpenAPI 3.0, generated without a warning."""
    with GENERATOR_STATS.silence():
        response = client().get(url("schema"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    problems = [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache]
    assert not problems, problems
    schema: dict[str, Any] = json.loads(response.content)
    validate_openapi(schema)  # openapi-spec-validator
    validate_schema(schema)  # and drf-spectacular's own check against the OpenAPI JSON schema
    return schema


def test_openapi_schema_is_valid_and_describes_the_answers(ada: Any) -> None:
    schema = schema_document()
    assert schema["openapi"].startswith("3.0.")
    assert schema["info"]["title"] == "realtime REST API"
    assert schema["servers"] == [{"url": f"http://{HOST}/realtime/api"}]
    assert set(schema["paths"]) == {
        "/streams/",
        "/streams/{stream}/events/",
        "/streams/{stream}/presence/",
        "/connections/",
    }
    assert set(schema["paths"]["/streams/{stream}/events/"]) == {"get", "post"}
    for fmt in ("yaml", "openapi"):  # drf-spectacular's name, and DRF's (the old one)
        as_yaml = client().get(url("schema"), {"format": fmt})
        assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi")
        assert yaml.safe_load(as_yaml.content) == schema

    # Real answers match the schema's components.
    components = schema["components"]["schemas"]

    def check(component: str, body: Any) -> None:
        resolver = {"components": schema["components"]}
        validator = OAS30Validator({**components[component], **resolver})
        validator.validate(body)

    published = publish(server_client(), "chat:1", {"event": "msg", "data": {"a": [1]}}).json()
    check("Published", published)
    check("Published", publish(server_client(), "chat:1", {"event": "msg", "data": 7}).json())
    check("History", session_client(ada).get(events_url("chat:1")).json())
    check("StreamList", server_client().get(url("streams")).json())
    registry.register_server("srv", "chan")
    presence.join("chat:1", str(ada.pk), ada.pk, "conn-a1", "srv", {"name": "Ada"})
    registry.add_connection("c1", "srv", ada.pk, "websocket", "10.0.0.1", "Firefox")
    check("Presence", server_client().get(url("presence", stream="chat:1")).json())
    check("ConnectionList", server_client().get(url("connections")).json())
    check("Error", publish(client(), "chat:1", {"event": "msg"}).json())
    with pytest.raises(ValidationError):  # and the components are not vacuous
        check("Published", {**published, "seq": "7"})


OPERATIONS = {  # (path, method): (operationId, statuses)
    ("/streams/{stream}/events/", "post"): ("publishEvent", {200, 201, 400, 401, 403, 413, 415}),
    ("/streams/{stream}/events/", "get"): ("listEvents", {200, 400, 401, 403, 404}),
    ("/streams/", "get"): ("listStreams", {200, 400, 401}),
    ("/streams/{stream}/presence/", "get"): ("getPresence", {200, 400, 401, 403}),
    ("/connections/", "get"): ("listConnections", {200, 400, 401, 403}),
}


def test_openapi_schema_describes_every_operation(db: None) -> None:
    schema = schema_document()
    found = {(route, method) for route, item in schema["paths"].items() for method in item}
    assert found == set(OPERATIONS)
    error_ref = {"$ref": "#/components/schemas/Error"}
    for (route, method), (operation_id, statuses) in OPERATIONS.items():
        operation = schema["paths"][route][method]
        assert operation["operationId"] == operation_id
        assert operation["summary"] and operation["description"]
        assert operation["tags"] == ["realtime"]
        responses = operation["responses"]
        assert {int(status) for status in responses} == statuses, operation_id
        for status, response in responses.items():
            assert response["description"]
            body = response["content"]["application/json"]["schema"]
            assert (body == error_ref) == (int(status) >= 400), (operation_id, status)
        parameters = {p["name"]: p for p in operation.get("parameters", [])}
        if "{stream}" in route:
            stream = parameters["stream"]
            assert (stream["in"], stream["required"]) == ("path", True)
            assert stream["schema"]["pattern"] == "^[A-Za-z0-9][A-Za-z0-9_.:@/=+-]*$"
            assert stream["schema"]["maxLength"] == 200
        if "limit" in parameters:
            limit = parameters["limit"]["schema"]
            assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 1000, 100)

    events = schema["paths"]["/streams/{stream}/events/"]
    post = events["post"]
    assert post["requestBody"]["required"] is True
    body_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    publish_body = schema["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert set(publish_body["properties"]) == {"event", "data", "key", "ephemeral"}
    assert publish_body["required"] == ["event"]
    header = next(p for p in post["parameters"] if p["name"] == "Idempotency-Key")
    assert (header["in"], header["schema"]["pattern"]) == ("header", "^[A-Za-z0-9_.:-]{1,64}$")
    history = {p["name"]: p for p in events["get"]["parameters"]}
    assert set(history) == {"stream", "since", "epoch", "limit"}
    assert history["since"]["schema"]["minimum"] == 0
    streams = schema["paths"]["/streams/"]["get"]["parameters"]
    assert {p["name"] for p in streams} == {"prefix", "after", "limit"}
    connections = {p["name"]: p for p in schema["paths"]["/connections/"]["get"]["parameters"]}
    assert set(connections) == {"user", "transport", "offset", "limit"}
    assert connections["transport"]["schema"]["enum"] == ["websocket", "sse"]
    assert connections["offset"]["schema"]["minimum"] == 0


def test_openapi_schema_describes_the_credentials(db: None) -> None:
    schema = schema_document()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["serverToken"]["type"] == "http"
    assert schemes["serverToken"]["scheme"] == "bearer"
    assert "API_TOKENS" in schemes["serverToken"]["description"]
    assert (schemes["userToken"]["in"], schemes["userToken"]["name"]) == ("header", "Authorization")
    assert (schemes["ticket"]["in"], schemes["ticket"]["name"]) == ("header", "Authorization")
    assert (schemes["session"]["in"], schemes["session"]["name"]) == ("cookie", "sessionid")
    credentials = [{"serverToken": []}, {"ticket": []}, {"userToken": []}, {"session": []}]
    for (route, method), (operation_id, _) in OPERATIONS.items():
        security = schema["paths"][route][method]["security"]
        # Anonymous callers ({}: no credentials) may be allowed by the stream policy, except
        # on the connection list (staff users and server tokens only).
        anonymous = [] if operation_id == "listConnections" else [{}]
        assert security == credentials + anonymous, operation_id


def generation_problems(**where: Any) -> list[str]:
    """drf-spectacular's warnings and errors generating the document of ``where``'s URLs."""
    with patched_settings(SETTINGS), GENERATOR_STATS.silence():
        APISchemaGenerator(**where).get_schema(request=None, public=True)
    return [*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache]


class UndescribedView(RealtimeAPIView):
    def get(self, request: Any, stream: str) -> Any:
        raise NotImplementedError


def test_every_api_view_describes_itself(db: None) -> None:
    """A view of the API without ``operation(...)`` (parameters, answers) fails here."""
    assert generation_problems(urlconf="realtime.api.urls") == []
    # The check bites: drf-spectacular cannot guess a plain APIView's answers.
    bare = [path("things/<path:stream>/", UndescribedView.as_view())]
    assert generation_problems(patterns=bare)


def test_openapi_schema_ignores_the_projects_settings(
    db: None, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """REST_FRAMEWORK and SPECTACULAR_SETTINGS are the project's, for its own API; this
    document keeps its own."""
    before = schema_document()
    settings.REST_FRAMEWORK = {
        "DEFAULT_SCHEMA_CLASS": "rest_framework.schemas.openapi.AutoSchema",
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
        "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.QueryParameterVersioning",
        "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
        "DEFAULT_THROTTLE_RATES": {"anon": "1/day"},
    }
    project = {
        "TITLE": "Shop API",
        "COMPONENT_SPLIT_REQUEST": True,
        "PREPROCESSING_HOOKS": [lambda endpoints: []],
        "SECURITY": [{"shopAuth": []}],
    }
    for name, value in project.items():
        monkeypatch.setattr(spectacular_settings, name, value)
    assert schema_document() == before
    assert schema_document() == before  # not throttled either
    assert spectacular_settings.TITLE == "Shop API"  # put back after the request


# --- end to end -----------------------------------------------------------------------------
@pytest.fixture
def api_server(daphne_server: Any) -> Any:
    overrides = {"RULES": RULES, "API_TOKENS": [SERVER_TOKEN]}
    return daphne_server(settings_env(overrides))


async def test_rest_publish_reaches_websocket_subscribers(api_server: Any) -> None:
    """A backend publishes over HTTP to daphne; a browser's WebSocket gets the event."""
    async with WSClient(api_server.ws_url + "/realtime/ws/") as ws:
        await ws.recv_until(lambda f: f["type"] == "welcome")
        await ws.send_json({"type": "subscribe", "stream": "public:orders"})
        await ws.recv_until(lambda f: f["type"] == "subscribed")
        async with httpx.AsyncClient(base_url=api_server.http_url, timeout=5) as http:
            response = await http.post(
                "/realtime/api/streams/public:orders/events/",
                json={"event": "order.paid", "data": {"id": 7}},
                headers={"Authorization": f"Bearer {SERVER_TOKEN}", "Idempotency-Key": "o7"},
            )
            assert response.status_code == 201, response.text
            again = await http.post(
                "/realtime/api/streams/public:orders/events/",
                json={"event": "order.paid", "data": {"id": 7}},
                headers={"Authorization": f"Bearer {SERVER_TOKEN}", "Idempotency-Key": "o7"},
            )
            assert (again.status_code, again.json()["duplicate"]) == (200, True)
            refused = await http.post(
                "/realtime/api/streams/public:orders/events/", json={"event": "order.paid"}
            )
            assert refused.status_code == 401
            # The same connection shows up in the staff-only list, over ASGI.
            connections = await http.get(
                "/realtime/api/connections/", headers={"Authorization": f"Bearer {SERVER_TOKEN}"}
            )
            assert connections.json()["count"] >= 1
        event = await ws.recv_until(lambda f: f["type"] == "event")
        assert (event["seq"], event["event"], event["data"]) == (1, "order.paid", {"id": 7})
        await ws.send_json({"type": "ping", "id": "p"})
        assert (await ws.recv_json())["type"] == "pong"  # and no duplicate before it
    assert await sync_to_async(stored)("public:orders") == [("public:orders", 1, "order.paid")]


async def test_concurrent_rest_publishes_are_group_committed(daphne_server: Any) -> None:
    """Under ASGI every sync view of a process runs on one thread; the publish leaves it for
    the group commit, so concurrent POSTs share transactions (the process's counters say
    so), and each is still answered with its own seq, in order per stream."""
    metrics_token = "metrics-token-" + "m" * 32
    overrides = {"RULES": RULES, "API_TOKENS": [SERVER_TOKEN], "METRICS_TOKEN": metrics_token}
    server = daphne_server(settings_env(overrides))
    auth = {"Authorization": f"Bearer {SERVER_TOKEN}"}
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:

        async def post(n: int) -> dict[str, Any]:
            response = await http.post(
                f"/realtime/api/streams/public:bulk{n % 2}/events/",
                json={"event": "tick", "data": {"n": n}},
                headers=auth,
            )
            assert response.status_code == 201, response.text
            return dict(response.json())

        answers = await asyncio.gather(*(post(n) for n in range(80)))
        async with WSClient(server.ws_url + "/realtime/ws/") as ws:  # starts the hub,
            await ws.recv_until(lambda f: f["type"] == "welcome")  # which reports figures
            scraped = await http.get(
                "/realtime/metrics", headers={"Authorization": f"Bearer {metrics_token}"}
            )
    for name in ("public:bulk0", "public:bulk1"):
        mine = sorted((a["seq"], a["data"]["n"]) for a in answers if a["stream"] == name)
        assert [seq for seq, _ in mine] == list(range(1, 41))
    rows = await sync_to_async(stored)("public:bulk0")
    assert [seq for _, seq, _ in rows] == list(range(1, 41))
    calls = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scraped.text.splitlines()
        if line.startswith("realtime_publish_group_calls_total")
    )
    assert calls >= 2, scraped.text
