"""Authentication before upgrade, origins, per-stream policy, revocation, limits — on real
daphne processes sharing Redis with this test process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import realtime
from realtime.core.policy import RulesPolicy
from tests.servers import WSClient, open_sse, settings_env

WS = "/realtime/ws/"
User = get_user_model()


@pytest.fixture
def start(daphne_server):
    def start_server(**overrides: Any):
        return daphne_server(settings_env(overrides))

    return start_server


async def make_user(username: str, **extra: Any) -> tuple[Any, str]:
    """A user and a signed-in session cookie for them."""

    def work() -> tuple[Any, str]:
        user = User.objects.create_user(username, password="pw-" + username, **extra)
        client = Client()
        client.force_login(user)
        return user, f"sessionid={client.cookies['sessionid'].value}"

    return await sync_to_async(work)()


async def refused(url: str, **kwargs: Any) -> int:
    """The HTTP status of a refused WebSocket handshake (fails if it is accepted)."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, open_timeout=5, **kwargs) as ws:
            pytest.fail(f"handshake accepted; first frame: {await ws.recv()}")
    return info.value.response.status_code


async def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A refused SSE request answers at once, so a plain GET reads it whole."""
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(url, headers=headers)


async def welcome(ws: WSClient) -> dict[str, Any]:
    return await ws.recv_until(lambda f: f["type"] == "welcome")


# --- authentication ------------------------------------------------------------------------
async def test_auth_required_refuses_anonymous_before_accept(start):
    server = start(AUTH_REQUIRED=True)
    origin = f"http://127.0.0.1:{server.port}"
    assert await refused(server.ws_url + WS, origin=origin) == 403
    response = await get(f"{server.http_url}/realtime/sse/?stream=public:a")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_required"
    _, cookie = await make_user("ada")
    async with WSClient(server.ws_url + WS, headers={"Cookie": cookie}) as ws:
        assert (await welcome(ws))["protocol"] == 1


async def test_tokens_in_the_authorization_header(start):
    server = start(AUTH_REQUIRED=True, RULES={"user:{user_id}": "owner"})
    user, _ = await make_user("svc")
    from rest_framework.authtoken.models import Token

    token = await sync_to_async(Token.objects.create)(user=user)
    for scheme in ("Token", "Bearer"):
        headers = {"Authorization": f"{scheme} {token.key}"}
        async with WSClient(server.ws_url + WS, headers=headers) as ws:
            await welcome(ws)
            await ws.send_json({"type": "subscribe", "stream": f"user:{user.pk}"})
            assert (await ws.recv_json())["type"] == "subscribed"
            await ws.send_json({"type": "subscribe", "stream": "user:999999"})
            assert (await ws.recv_json())["code"] == "forbidden"
    # A wrong token is refused even where anonymous connections are welcome.
    open_server = start()
    status = await refused(
        open_server.ws_url + WS, additional_headers={"Authorization": "Token nope"}
    )
    assert status == 403
    response = await get(
        f"{open_server.http_url}/realtime/sse/?stream=public:a",
        headers={"Authorization": "Bearer nope"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"


async def get_ticket(server, cookie: str) -> str:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        page = await http.get("/", headers={"Cookie": cookie})
        csrf = page.cookies["csrftoken"]
        response = await http.post(
            "/realtime/ticket/",
            headers={"Cookie": f"{cookie}; csrftoken={csrf}", "X-CSRFToken": csrf},
        )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()["ticket"]


async def test_tickets_work_once_and_stay_out_of_logs(start):
    server = start(AUTH_REQUIRED=True, TICKET_MAX_AGE=2)
    _, cookie = await make_user("ada")
    ticket = await get_ticket(server, cookie)
    offer = ["realtime.v1", f"realtime.ticket.{ticket}"]
    url = server.ws_url + WS
    origin = f"http://127.0.0.1:{server.port}"
    async with connect(url, subprotocols=offer, origin=origin, open_timeout=5) as ws:
        assert ws.subprotocol == "realtime.v1"  # the ticket is never echoed
        assert json.loads(await ws.recv())["type"] == "welcome"
    assert await refused(url, subprotocols=offer, origin=origin) == 403  # used once already
    second = await get_ticket(server, cookie)
    async with open_sse(
        f"{server.http_url}/realtime/sse/?stream=public:a",
        headers={"Authorization": f"Ticket {second}"},
    ) as sse:
        assert sse.status_code == 200
        assert (await sse.next_event())["event"] == "realtime.welcome"
        await sse.aclose()
    late = await get_ticket(server, cookie)
    await asyncio.sleep(2.5)
    assert await refused(url, subprotocols=["realtime.v1", f"realtime.ticket.{late}"]) == 403
    forged = ticket[:-3] + ("AAA" if not ticket.endswith("AAA") else "BBB")
    assert await refused(url, subprotocols=["realtime.v1", f"realtime.ticket.{forged}"]) == 403
    for issued in (ticket, second, late):
        assert issued not in server.log()
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.post("/realtime/ticket/")).status_code in (401, 403)


# --- origins ----------------------------------------------------------------------------
async def test_cross_site_origins_are_refused(start):
    server = start()
    url = server.ws_url + WS
    assert await refused(url, origin="http://evil.example") == 403
    assert await refused(url, origin="null") == 403
    async with WSClient(url, origin=f"http://localhost:{server.port}") as ws:
        await welcome(ws)
    async with WSClient(url, origin=None) as ws:  # not a browser
        await welcome(ws)
    listed = start(ALLOWED_ORIGINS=["https://app.example"])
    async with WSClient(listed.ws_url + WS, origin="https://app.example") as ws:
        await welcome(ws)
    assert await refused(listed.ws_url + WS, origin=f"http://127.0.0.1:{listed.port}") == 403


# --- policy -------------------------------------------------------------------------------
class Person:
    def __init__(self, pk: int | None, staff: bool = False) -> None:
        self.pk, self.is_staff = pk, staff
        self.is_authenticated = self.is_active = pk is not None


async def chat_rule(action: str, user: Any, stream: str) -> bool:
    return action == "publish" and user.is_authenticated


@pytest.mark.parametrize(
    ("action", "user", "stream", "allowed"),
    [
        ("subscribe", Person(None), "public:x", True),
        ("history", Person(None), "public:x", True),
        ("publish", Person(1, staff=True), "public:x", False),
        ("subscribe", Person(None), "private:x", False),
        ("subscribe", Person(3), "private:x", True),
        ("subscribe", Person(3), "user:3", True),
        ("presence", Person(3), "user:3:inbox", True),
        ("subscribe", Person(4), "user:3", False),
        ("subscribe", Person(None), "user:3", False),
        ("subscribe", Person(3), "user:3x", False),
        ("publish", Person(3), "chat:1", True),
        ("subscribe", Person(3), "chat:1", False),
        ("subscribe", Person(1, staff=True), "ops", True),
        ("subscribe", Person(1), "ops", False),
        ("subscribe", Person(1, staff=True), "unlisted", False),
    ],
)
async def test_rules(settings, action, user, stream, allowed):
    settings.REALTIME = {
        "RULES": {
            "public:*": "public",
            "private:*": "private",
            "user:{user_id}": "owner",
            "user:{user_id}:*": "owner",
            "chat:*": "tests.e2e.test_security.chat_rule",
            "ops": "staff",
        }
    }
    assert await RulesPolicy().has_permission(action, user, stream) is allowed


async def test_history_and_presence_are_separate_permissions(start):
    server = start(
        RULES={"public:*": "public", "live:*": {"subscribe": "anyone"}},
    )
    for n in range(3):
        await realtime.apublish("live:feed", "e", n)
    async with WSClient(server.ws_url + WS) as ws:
        await welcome(ws)
        await ws.send_json({"type": "subscribe", "id": 1, "stream": "live:feed", "since": 0})
        error = await ws.recv_json()
        assert (error["code"], error["id"]) == ("forbidden", 1)
        await ws.send_json({"type": "subscribe", "id": 2, "stream": "live:feed", "presence": {}})
        assert (await ws.recv_json())["type"] == "subscribed"
        assert (await ws.recv_json())["code"] == "forbidden"  # presence join refused
        await realtime.apublish("live:feed", "e", 3)
        event = await ws.recv_json()
        assert (event["type"], event["seq"]) == ("event", 4)  # live only, no history
    cursor = realtime.protocol.encode_cursor({"live:feed": ("x", 0)})
    response = await get(
        f"{server.http_url}/realtime/sse/?stream=live:feed", headers={"Last-Event-ID": cursor}
    )
    assert response.status_code == 401  # anonymous: signing in might help
    response = await get(f"{server.http_url}/realtime/sse/?stream=secret")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "forbidden"


# --- revocation ---------------------------------------------------------------------------
async def test_logout_deactivation_and_password_change_end_connections(start):
    a, b = (
        start(RULES={"public:*": "public", "private:*": "private"}),
        start(RULES={"public:*": "public", "private:*": "private"}),
    )
    _, ada_cookie = await make_user("ada")
    bob, bob_cookie = await make_user("bob")

    async def open_as(server, cookie: str) -> WSClient:
        ws = WSClient(server.ws_url + WS, headers={"Cookie": cookie})
        await ws.connect()
        await welcome(ws)
        await ws.send_json({"type": "subscribe", "stream": "private:news"})
        await ws.recv_until(lambda f: f["type"] == "subscribed")
        return ws

    on_a, on_b, bystander = await open_as(a, ada_cookie), await open_as(b, ada_cookie), None
    bystander = await open_as(a, bob_cookie)

    def log_out() -> None:
        client = Client()
        client.cookies["sessionid"] = ada_cookie.split("=", 1)[1]
        client.logout()

    await sync_to_async(log_out)()
    for ws in (on_a, on_b):
        error = await ws.recv_until(lambda f: f["type"] == "error", timeout=5)
        assert error["code"] == "revoked"
        assert await ws.wait_closed() == 4401
    # Bob is untouched.
    await bystander.send_json({"type": "ping"})
    assert (await bystander.recv_until(lambda f: f["type"] == "pong"))["type"] == "pong"

    bob.is_active = False
    await sync_to_async(bob.save)()
    assert await bystander.wait_closed(timeout=5) == 4401

    carol, carol_cookie = await make_user("carol")
    ws = await open_as(b, carol_cookie)
    carol.set_password("new password")
    await sync_to_async(carol.save)()
    assert await ws.wait_closed(timeout=5) == 4401


async def test_revoke_streams_keeps_the_connection(start):
    server = start(RULES={"public:*": "public", "private:*": "private"})
    user, cookie = await make_user("ada")
    async with WSClient(server.ws_url + WS, headers={"Cookie": cookie}) as ws:
        await welcome(ws)
        for stream in ("private:a", "private:b", "public:c"):
            await ws.send_json({"type": "subscribe", "stream": stream})
            await ws.recv_until(lambda f: f["type"] == "subscribed")
        await realtime.arevoke(user, streams="private:*", reason="Plan expired.")
        gone = [await ws.recv_until(lambda f: f["type"] == "unsubscribed") for _ in range(2)]
        assert sorted(f["stream"] for f in gone) == ["private:a", "private:b"]
        assert {f["reason"] for f in gone} == {"revoked"}
        await realtime.apublish("private:a", "e")
        await realtime.apublish("public:c", "e")
        event = await ws.recv_until(lambda f: f["type"] == "event")
        assert event["stream"] == "public:c"


async def test_periodic_recheck_bounds_revocation_without_signals(start):
    server = start(RULES={"private:*": "private"}, REAUTH_INTERVAL=0.5, RECONCILE_INTERVAL=0.2)
    _, cookie = await make_user("ada")
    async with WSClient(server.ws_url + WS, headers={"Cookie": cookie}) as ws:
        await welcome(ws)
        # The session disappears behind the app's back: no signal, no revoke message.
        from django.contrib.sessions.models import Session

        await sync_to_async(Session.objects.all().delete)()
        assert await ws.wait_closed(timeout=5) == 4401


# --- limits -------------------------------------------------------------------------------
async def test_connection_caps(start):
    server = start(MAX_CONNECTIONS_PER_USER=2, MAX_CONNECTIONS_PER_IP=3)
    _, cookie = await make_user("ada")
    url = server.ws_url + WS
    origin = f"http://127.0.0.1:{server.port}"
    first = await WSClient(url, headers={"Cookie": cookie}).connect()
    second = await WSClient(url, headers={"Cookie": cookie}).connect()
    await welcome(first)
    await welcome(second)
    assert await refused(url, origin=origin, additional_headers={"Cookie": cookie}) == 403
    third = await WSClient(url).connect()  # anonymous, same IP: the third from 127.0.0.1
    await welcome(third)
    assert await refused(url, origin=origin) == 403
    response = await get(f"{server.http_url}/realtime/sse/?stream=public:a")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_connections"
    for ws in (first, second, third):
        await ws.close()


async def test_rate_limit_then_close_and_others_unaffected(start):
    server = start(RATE_LIMIT={"rate": 5, "burst": 5})
    async with WSClient(server.ws_url + WS) as flood, WSClient(server.ws_url + WS) as calm:
        await welcome(flood)
        await welcome(calm)
        for _ in range(8):
            await flood.send_json({"type": "ping"})
        frames = [await flood.recv_json() for _ in range(6)]
        assert [f["type"] for f in frames].count("pong") == 5
        assert [f.get("code") for f in frames if f["type"] == "error"] == ["rate_limited"]
        for _ in range(20):
            await flood.send_json({"type": "ping"})
        assert await flood.wait_closed() == 4429
        await calm.send_json({"type": "ping"})
        assert (await calm.recv_json())["type"] == "pong"


async def test_deep_json_is_refused(start):
    server = start(MAX_JSON_DEPTH=4)
    async with WSClient(server.ws_url + WS) as ws:
        await welcome(ws)
        deep: Any = {"x": 1}
        for _ in range(5):
            deep = {"d": deep}
        await ws.send_json({"type": "ping", "id": 1, "extra": deep})
        error = await ws.recv_json()
        assert error["code"] == "too_deep"
        await ws.send_json({"type": "ping", "extra": {"a": {"b": 1}}})
        assert (await ws.recv_json())["type"] == "pong"
