"""Live models (``realtime.live``): declared once, their changes reach WebSocket and SSE
subscribers on real daphne processes, ride the change's transaction, and come from every
place Django code runs — a view, an async view, the admin, a command, the shell.

The demo's ``Task`` (``project.demo.models``) is the live model served by the daphne
processes; in-process tests also make ``auth.Group`` live for a while, to try options."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import AsyncClient, Client
from rest_framework import serializers

import realtime
from project.demo.models import Task
from realtime import live
from realtime.core import snapshots
from realtime.core.policy import RulesPolicy
from realtime.live.access import allows
from realtime.models import Event
from tests.e2e.test_schemas import check as check_frame
from tests.servers import WSClient, arun_manage, open_sse

User = get_user_model()
WS = "/realtime/ws/"


def stored(stream: str) -> list[tuple[int, str, Any]]:
    rows = Event.objects.filter(stream__name=stream).order_by("seq")
    return [(e.seq, e.event, e.data) for e in rows]


def events(stream: str) -> list[str]:
    return [event for _, event, _ in stored(stream)]


# --- declaring ----------------------------------------------------------------------------
@pytest.fixture
def live_group() -> Iterator[Any]:
    """Make ``auth.Group`` live for one test (``register`` as a plain call)."""

    def make(**options: Any) -> Any:
        options.setdefault("streams", ["groups", "groups:{pk}"])
        if "serializer" not in options:
            options.setdefault("fields", ["id", "name"])
        live.register(Group, **options)
        return live.get(Group)

    yield make
    if live.get(Group) is not None:
        live.unregister(Group)
    assert "save_base" not in Group.__dict__  # the wrapper is gone again


def test_the_demo_task_is_declared_live() -> None:
    options = live.get(Task)
    assert options is not None
    assert [t.template for t in options.templates] == ["tasks", "tasks:{pk}"]
    assert options.events == {
        "created": "task.created",
        "updated": "task.updated",
        "deleted": "task.deleted",
        "batch": "task.batch",
    }
    assert snapshots.find("tasks") is not None and snapshots.find("tasks:7") is not None


def test_created_updated_deleted_are_stored_in_order(db: None) -> None:
    task = Task.objects.create(title="Write docs")
    task.done = True
    task.save()
    pk = task.pk
    task.delete()
    assert events("tasks") == ["task.created", "task.updated", "task.deleted"]
    assert events(f"tasks:{pk}") == ["task.created", "task.updated", "task.deleted"]
    (_, _, created), (_, _, updated), (_, _, deleted) = stored("tasks")
    assert set(created) == {"id", "title", "done", "created_at", "updated_at"}
    assert (created["id"], created["title"], created["done"]) == (pk, "Write docs", False)
    assert updated["done"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", updated["updated_at"])
    assert deleted == {"id": pk}  # the last known key fields


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"streams": "groups"}, "list of stream templates"),
        ({"streams": []}, "list of stream templates"),
        ({"streams": ["groups:{nope}"]}, "not a field"),
        ({"streams": ["groups:{pk!r}"]}, "plain attribute names"),
        ({"streams": ["groups:{pk.x}"]}, "plain attribute names"),
        ({"streams": ["groups:{pk}:{pk}"]}, "repeats"),
        ({"streams": ["groups:{"]}, "groups:{"),
        ({"streams": [42]}, "is not a stream"),
        ({"streams": ["g"], "fields": ["name"], "serializer": object}, "`serializer` or"),
        ({"streams": ["g"], "fields": ["permissions"]}, "many-to-many"),
        ({"streams": ["g"]}, "say what to send"),
        ({"streams": ["g"], "fields": "name"}, "list of names"),
        ({"streams": ["g"], "fields": "__all__", "events": ["renamed"]}, "among created"),
        ({"streams": ["g"], "fields": "__all__", "events": {"moved": "x"}}, "event kinds"),
        ({"streams": ["g"], "fields": "__all__", "events": {"created": "realtime.x"}}, "reserved"),
        ({"streams": ["g"], "fields": "__all__", "event_prefix": "bad prefix"}, "Event type"),
    ],
)
def test_mistakes_fail_at_declaration(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        live.register(Group, **options)
    assert live.get(Group) is None


def test_checks_find_live_streams_nobody_reads_and_hooks_nobody_asks(settings: Any) -> None:
    from realtime.live.checks import check_live_models

    assert check_live_models() == []  # the demo's RULES route both streams to live.rule
    settings.REALTIME = {**settings.REALTIME, "RULES": {"public:*": "public"}}
    found = [(w.id, w.obj, w.hint) for w in check_live_models() if w.obj is Task]
    assert found == [
        ("realtime.W101", Task, "Add 'tasks': 'realtime.live.rule' to RULES."),
        ("realtime.W101", Task, "Add 'tasks:*': 'realtime.live.rule' to RULES."),
    ]
    settings.REALTIME = {
        **settings.REALTIME,
        "RULES": {"tasks": "public", "tasks:*": "realtime.live.rule"},
    }
    assert [(w.id, w.obj) for w in check_live_models() if w.obj is Task] == [
        ("realtime.W102", Task)
    ]


def test_relations_in_templates_name_their_key(db: None) -> None:
    from django.contrib.auth.models import Permission

    with pytest.raises(ImproperlyConfigured, match=re.escape("use {content_type_id}")):
        live.register(Permission, streams=["perms:{content_type}"], fields="__all__")
    with pytest.raises(ImproperlyConfigured, match="already live"):
        live.register(Task, streams=["x"], fields="__all__")
    with pytest.raises(ImproperlyConfigured, match="not live"):
        live.unregister(Permission)


def test_options_as_a_call(db: None, live_group: Any) -> None:
    class GroupSerializer(serializers.ModelSerializer[Group]):
        upper = serializers.SerializerMethodField()

        class Meta:
            model = Group
            fields = ["id", "name", "upper"]

        def get_upper(self, group: Group) -> str:
            return group.name.upper()

    live_group(
        streams=["groups", lambda group: [f"letters:{group.name[0]}", "groups"]],
        serializer=GroupSerializer,
        events={"created": "team.formed", "deleted": "team.gone"},
    )
    group = Group.objects.create(name="ops")
    pk = group.pk
    group.name = "ops2"
    group.save()  # "updated" is not sent
    group.delete()
    assert stored("groups") == [
        (1, "team.formed", {"id": pk, "name": "ops", "upper": "OPS"}),
        (2, "team.gone", {"id": pk}),
    ]
    assert events("letters:o") == ["team.formed", "team.gone"]


def test_a_save_that_changes_streams_tells_the_old_ones(db: None, live_group: Any) -> None:
    live_group(streams=["groups", "groups:{name}", lambda g: f"letters:{g.name[0]}"])
    group = Group.objects.create(name="apple")
    group.name = "banana"
    group.save()
    assert stored("groups:apple")[-1] == (2, "group.deleted", {"id": group.pk, "name": "apple"})
    assert events("groups:banana") == ["group.updated"]
    assert events("letters:a") == ["group.created", "group.deleted"]
    assert events("letters:b") == ["group.updated"]
    assert events("groups") == ["group.created", "group.updated"]
    group.save()  # no move: nothing extra
    assert events("groups:banana") == ["group.updated", "group.updated"]
    assert len(stored("groups:apple")) == 2


def test_raw_saves_are_not_published(db: None) -> None:
    from django.utils import timezone

    now = timezone.now()
    Task(title="from a fixture", created_at=now, updated_at=now).save_base(raw=True)
    assert Task.objects.count() == 1
    assert stored("tasks") == []


# --- transactions -------------------------------------------------------------------------
def test_the_event_is_in_the_change_transaction(transactional_db: None, settings: Any) -> None:
    """A publish that fails takes the change down with it: never one without the other."""
    settings.REALTIME = {**settings.REALTIME, "MAX_EVENT_SIZE": 100}
    with pytest.raises(realtime.exceptions.InvalidEvent):
        Task.objects.create(title="x" * 150)
    assert not Task.objects.exists()
    assert stored("tasks") == []


def test_rollback_and_nested_rollback_store_and_send_nothing(
    db: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(ZeroDivisionError), transaction.atomic():
            Task.objects.create(title="rolled back")
            1 / 0  # noqa: B018
        with transaction.atomic():
            kept = Task.objects.create(title="kept")
            try:
                with transaction.atomic():
                    kept.title = "renamed, then rolled back"
                    kept.save()
                    Task.objects.create(title="never")
                    kept.delete()
                    1 / 0  # noqa: B018
            except ZeroDivisionError:
                pass
    assert [t.title for t in Task.objects.all()] == ["kept"]
    assert events("tasks") == ["task.created"]  # seq 1: the rolled-back ones reused nothing
    assert stored("tasks")[0][2]["title"] == "kept"
    assert len(callbacks) == 2  # one fan-out per stream of the one surviving event


# --- batches and the bulk paths -------------------------------------------------------------
def test_bulk_paths_publish_one_batch_per_stream(db: None) -> None:
    # bulk_create, update() and bulk_update() are captured (realtime.live.capture): inside a
    # batch, one event per stream holds them all.
    with live.batch():
        made = Task.objects.bulk_create([Task(title=f"t{n}") for n in range(3)])
    ((seq, event, data),) = stored("tasks")
    assert (seq, event) == (1, "task.batch")
    assert [c["event"] for c in data["changes"]] == ["task.created"] * 3
    assert [c["data"]["title"] for c in data["changes"]] == ["t0", "t1", "t2"]
    assert events(f"tasks:{made[0].pk}") == ["task.batch"]

    with live.batch():
        Task.objects.filter(title__in=["t0", "t1"]).update(done=True)
    changes = stored("tasks")[-1][2]["changes"]
    assert [(c["event"], c["data"]["done"]) for c in changes] == [("task.updated", True)] * 2

    # QuerySet.delete() sends post_delete per row; batch() makes it one event per stream.
    with live.batch():
        Task.objects.filter(done=True).delete()
    changes = stored("tasks")[-1][2]["changes"]
    assert sorted(changes, key=lambda c: c["data"]["id"]) == [
        {"event": "task.deleted", "data": {"id": t.pk}} for t in made[:2]
    ]
    # Without a batch: one event per row.
    Task.objects.all().delete()
    assert events("tasks")[-1] == "task.deleted" and len(stored("tasks")) == 4


def test_bulk_helpers_announce_what_capture_leaves_out(db: None, live_group: Any) -> None:
    """``capture=False``: bulk writes publish nothing until a ``bulk_*`` helper says so."""
    live_group(capture=False)
    made = Group.objects.bulk_create([Group(name=f"g{n}") for n in range(3)])
    assert stored("groups") == []
    assert live.bulk_created(made) == 3
    ((seq, event, _),) = stored("groups")
    assert (seq, event) == (1, "group.batch")
    Group.objects.filter(name="g0").update(name="x")
    assert len(stored("groups")) == 1
    live.bulk_updated(Group.objects.filter(name="x"))
    changes = stored("groups")[-1][2]["changes"]
    assert [(c["event"], c["data"]["name"]) for c in changes] == [("group.updated", "x")]


def test_a_batch_keeps_order_skips_rollbacks_and_splits_big_ones(db: None, settings: Any) -> None:
    with live.batch():
        task = Task.objects.create(title="a")
        task.done = True
        task.save()
        try:
            with transaction.atomic():
                Task.objects.create(title="rolled back")
                1 / 0  # noqa: B018
        except ZeroDivisionError:
            pass
        with live.batch():  # a nested batch joins the outer one
            Task.objects.create(title="b")
        assert stored("tasks") == []  # nothing until the block ends
    ((_, event, data),) = stored("tasks")
    assert event == "task.batch"
    assert [(c["event"], c["data"]["title"]) for c in data["changes"]] == [
        ("task.created", "a"),
        ("task.updated", "a"),
        ("task.created", "b"),
    ]
    # An error in the block: nothing changed, nothing published.
    with pytest.raises(ZeroDivisionError), live.batch():
        Task.objects.create(title="c")
        1 / 0  # noqa: B018
    assert len(stored("tasks")) == 1 and not Task.objects.filter(title="c").exists()
    # A batch larger than MAX_EVENT_SIZE is split, each event within the limit.
    settings.REALTIME = {**settings.REALTIME, "MAX_EVENT_SIZE": 1000}
    with live.batch():
        Task.objects.bulk_create([Task(title=f"{n:03}" * 10) for n in range(20)])
    batches = stored("tasks")[1:]
    assert len(batches) > 2
    assert all(len(json.dumps(d, separators=(",", ":"))) <= 1000 for _, _, d in batches)
    titles = [c["data"]["title"] for _, _, d in batches for c in d["changes"]]
    assert titles == [f"{n:03}" * 10 for n in range(20)]  # in order, none lost


def test_a_batch_whose_first_change_rolled_back_keeps_the_rest(db: None) -> None:
    """The first change makes the batch's table of marks (``live.marks``) inside a savepoint
    that rolls back, which takes the table too; later changes make it again. Nothing of the
    batch is left in it afterwards."""
    from django.db import connection

    from realtime.live import marks

    with live.batch():
        with contextlib.suppress(ZeroDivisionError), transaction.atomic():
            Task.objects.create(title="rolled back")
            1 / 0  # noqa: B018
        Task.objects.create(title="kept")
        with contextlib.suppress(ZeroDivisionError), transaction.atomic():
            Task.objects.bulk_create([Task(title="bulk, rolled back")])
            1 / 0  # noqa: B018
    ((_, event, data),) = stored("tasks")
    assert event == "task.batch"
    assert [(c["event"], c["data"]["title"]) for c in data["changes"]] == [("task.created", "kept")]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {marks.TABLE}")
        assert cursor.fetchone()[0] == 0


def test_bulk_helpers_refuse_what_they_cannot_publish(db: None) -> None:
    with pytest.raises(TypeError, match="not a live model"):
        live.bulk_created([Group(name="x", pk=1)])
    with pytest.raises(ValueError, match="primary key"):
        live.bulk_created([Task(title="unsaved")])


# --- who may subscribe: live.rule and can_subscribe ------------------------------------------
def test_can_subscribe_decides_through_the_stream_policy(transactional_db: None) -> None:
    # transactional_db: the rule reads the database through database_sync_to_async, which
    # closes the thread's connection around each call (as Channels must on the event loop).
    ada = User.objects.create_user("ada")
    bob = User.objects.create_user("bob")
    mine = Task.objects.create(title=f"owner:{ada.pk}")
    seen: list[tuple[Any, str, Any]] = []

    def only_owner(user: Any, stream: str, obj: Task | None) -> bool:
        seen.append((user, stream, obj))
        if obj is None:
            return bool(user.is_authenticated)  # the collection: any signed-in user
        return obj.title == f"owner:{user.pk}"

    original = live.get(Task)
    assert original is not None
    live.unregister(Task)
    try:
        live.register(
            Task, streams=["tasks", "tasks:{pk}"], fields="__all__", can_subscribe=only_owner
        )
        policy = RulesPolicy()

        def check(action: str, user: Any, stream: str) -> bool:
            from asgiref.sync import async_to_sync

            return bool(async_to_sync(policy.has_permission)(action, user, stream))

        assert check("subscribe", ada, f"tasks:{mine.pk}") is True
        assert check("history", ada, f"tasks:{mine.pk}") is True
        assert check("subscribe", bob, f"tasks:{mine.pk}") is False
        assert check("subscribe", bob, "tasks") is True
        assert check("subscribe", AnonymousUser(), "tasks") is False
        assert check("publish", ada, f"tasks:{mine.pk}") is False  # only the model publishes
        assert seen[0] == (ada, f"tasks:{mine.pk}", mine)
        # Streams of objects that do not exist, or not this model's, are nobody's.
        calls = len(seen)
        assert check("subscribe", ada, "tasks:999999") is False
        assert check("subscribe", ada, "tasks:abc") is False
        assert len(seen) == calls  # decided without asking the hook
    finally:
        live.unregister(Task)
        live.register(
            Task,
            streams=[t.template for t in original.templates],
            fields=[key for key, _ in original.fields],
            snapshot=original.snapshot,
            can_subscribe=original.can_subscribe,
        )
    # The default hook: signed-in users.
    assert allows(ada, "tasks") is True  # the demo's hook: anyone
    assert allows(AnonymousUser(), "nothing:live") is False


# --- from everywhere, end to end on real servers -------------------------------------------
async def subscribe(ws: WSClient, stream: str, **fields: Any) -> dict[str, Any]:
    await ws.recv_until(lambda f: f["type"] == "welcome")
    await ws.send_json({"type": "subscribe", "id": stream, "stream": stream, **fields})
    return await ws.recv_until(lambda f: f["type"] == "subscribed")


async def next_event(ws: WSClient, timeout: float = 10) -> dict[str, Any]:
    return await ws.recv_until(lambda f: f["type"] == "event", timeout=timeout)


async def test_create_update_delete_reach_websocket_and_sse(daphne_server: Any) -> None:
    server = daphne_server()
    async with (
        WSClient(server.ws_url + WS) as ws,
        open_sse(f"{server.http_url}/realtime/sse/?stream=tasks") as sse,
    ):
        await subscribe(ws, "tasks")
        assert (await sse.next_event())["event"] == "realtime.welcome"
        assert (await sse.next_event())["event"] == "realtime.subscribed"
        task = await Task.objects.acreate(title="Ship it")
        pk = task.pk
        created = await next_event(ws)
        assert (created["stream"], created["seq"], created["event"]) == ("tasks", 1, "task.created")
        assert created["data"]["title"] == "Ship it"
        async with WSClient(server.ws_url + WS) as one:
            await subscribe(one, f"tasks:{task.pk}")
            task.done = True
            await task.asave()
            await task.adelete()
            for client in (ws, one):
                updated, deleted = await next_event(client), await next_event(client)
                assert (updated["event"], updated["data"]["done"]) == ("task.updated", True)
                assert (deleted["event"], deleted["data"]) == ("task.deleted", {"id": pk})
        received = [await sse.next_event() for _ in range(3)]
        assert [e["event"] for e in received] == ["task.created", "task.updated", "task.deleted"]
        assert [e["data"]["seq"] for e in received] == [1, 2, 3]
        assert received[0]["data"] == created


async def test_rollbacks_send_nothing_to_subscribers(daphne_server: Any) -> None:
    server = daphne_server()

    def work() -> None:
        try:
            with transaction.atomic():
                Task.objects.create(title="rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
        with transaction.atomic():
            try:
                with transaction.atomic():
                    Task.objects.create(title="nested, rolled back")
                    raise RuntimeError
            except RuntimeError:
                pass
            Task.objects.create(title="committed")
        connection.close()

    async with WSClient(server.ws_url + WS) as ws:
        await subscribe(ws, "tasks")
        await sync_to_async(work, thread_sensitive=False)()
        event = await next_event(ws)
        assert (event["seq"], event["data"]["title"]) == (1, "committed")
        await ws.send_json({"type": "ping", "id": 1})
        assert (await ws.recv_json())["type"] == "pong"  # nothing else was sent before it


async def staff_session(username: str = "admin") -> str:
    def work() -> str:
        user = User.objects.create_superuser(username, password="pw")
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    return await sync_to_async(work)()


async def csrf_for(http: httpx.AsyncClient, path: str) -> str:
    page = await http.get(path)
    assert page.status_code == 200, page.text[:500]
    return http.cookies["csrftoken"]


async def test_changes_from_the_admin_and_async_views(daphne_server: Any) -> None:
    """Served by daphne: the admin (sync views under ASGI) and the board's async views."""
    server = daphne_server()
    session = await staff_session()
    async with (
        WSClient(server.ws_url + WS) as ws,
        httpx.AsyncClient(base_url=server.http_url, timeout=10) as http,
    ):
        await subscribe(ws, "tasks")
        http.cookies.set("sessionid", session)
        # The admin's add form.
        csrf = await csrf_for(http, "/admin/demo/task/add/")
        response = await http.post(
            "/admin/demo/task/add/",
            data={"title": "From the admin", "csrfmiddlewaretoken": csrf},
        )
        assert response.status_code == 302, response.text[:2000]
        created = await next_event(ws)
        assert (created["event"], created["data"]["title"]) == ("task.created", "From the admin")
        pk = created["data"]["id"]
        # The admin's bulk action: one batch event.
        response = await http.post(
            "/admin/demo/task/",
            data={"action": "mark_done", "_selected_action": [pk], "csrfmiddlewaretoken": csrf},
        )
        assert response.status_code == 302, response.text[:2000]
        batch = await next_event(ws)
        assert batch["event"] == "task.batch"
        assert [(c["event"], c["data"]["done"]) for c in batch["data"]["changes"]] == [
            ("task.updated", True)
        ]
        # The board page and its async JSON views (asave/adelete in a worker thread).
        csrf = await csrf_for(http, "/tasks/")
        headers = {"X-CSRFToken": csrf}
        response = await http.post("/tasks/new/", json={"title": "Async"}, headers=headers)
        assert response.status_code == 201, response.text
        new = response.json()["id"]
        response = await http.post(f"/tasks/{new}/", json={"done": True}, headers=headers)
        assert response.status_code == 200, response.text
        response = await http.delete(f"/tasks/{new}/", headers=headers)
        assert response.status_code == 204
        got = [await next_event(ws) for _ in range(3)]
        assert [(e["event"], e["data"]["id"]) for e in got] == [
            ("task.created", new),
            ("task.updated", new),
            ("task.deleted", new),
        ]
        assert got[1]["data"]["done"] is True
        # Bad input changes nothing and publishes nothing.
        assert (
            await http.post("/tasks/new/", json={"title": " "}, headers=headers)
        ).status_code == 400
        assert (await http.post(f"/tasks/{new}/", json={}, headers=headers)).status_code == 404
    assert "SynchronousOnlyOperation" not in server.log()
    assert "Traceback" not in server.log()


async def test_changes_from_a_command_and_the_shell(daphne_server: Any) -> None:
    server = daphne_server()
    async with WSClient(server.ws_url + WS) as ws:
        await subscribe(ws, "tasks")
        code = "from project.demo.models import Task; Task.objects.create(title='from the shell')"
        await arun_manage("shell", "-c", code)
        event = await next_event(ws, timeout=20)
        assert (event["event"], event["data"]["title"]) == ("task.created", "from the shell")


async def test_async_code_and_the_wsgi_path_in_process(transactional_db: None) -> None:
    """In this process: ORM async methods, an async view through AsyncClient, the admin
    through the (WSGI-style) test client — no SynchronousOnlyOperation, nothing on the loop."""
    task = await Task.objects.acreate(title="a")
    task.title = "b"
    await task.asave()
    response = await AsyncClient(HTTP_HOST="127.0.0.1").post(
        f"/tasks/{task.pk}/", {"done": True}, content_type="application/json"
    )
    assert response.status_code == 200
    await task.adelete()

    def admin_add() -> None:
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(User.objects.create_superuser("root", password="pw"))
        response = client.post("/admin/demo/task/add/", {"title": "via admin"})
        assert response.status_code == 302

    await sync_to_async(admin_add)()
    kinds = await sync_to_async(events)("tasks")
    assert kinds == ["task.created", "task.updated", "task.updated", "task.deleted", "task.created"]
    # What the a-methods avoid: the sync publish refuses to run on the event loop.
    with pytest.raises(realtime.exceptions.SyncInAsyncContext):
        realtime.publish("tasks", "x")


async def test_snapshot_when_history_is_lost(daphne_server: Any, settings: Any) -> None:
    """A subscriber whose position was trimmed away gets the rows, then live events."""
    retention = {"tasks": {"max_events": 2}}
    settings.REALTIME = {**settings.REALTIME, "RETENTION": retention}  # this process trims
    server = daphne_server(
        {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "REALTIME_TEST_OVERRIDES": json.dumps({"RETENTION": retention}),
        }
    )
    for n in range(5):
        await Task.objects.acreate(title=f"t{n}")
    async with WSClient(server.ws_url + WS) as ws:
        subscribed = await subscribe(ws, "tasks", since=1)
        assert (subscribed["recovered"], subscribed["seq"]) == (False, 5)
        snapshot = await ws.recv_json()
        assert snapshot["type"] == "snapshot"
        assert (snapshot["stream"], snapshot["seq"]) == ("tasks", 5)
        assert [t["title"] for t in snapshot["data"]["objects"]] == [f"t{n}" for n in range(5)]
        assert snapshot["data"]["truncated"] is False
        await Task.objects.acreate(title="after")
        event = await next_event(ws)
        assert (event["seq"], event["data"]["title"]) == (6, "after")
        # The object stream's snapshot is the one row.
        pk = snapshot["data"]["objects"][0]["id"]
        stream = f"tasks:{pk}"
        await ws.send_json({"type": "subscribe", "stream": stream, "since": 0, "epoch": "x"})
        one = await ws.recv_until(lambda f: f["type"] == "snapshot")
        assert [t["id"] for t in one["data"]["objects"]] == [pk]
        for frame in ws.received:  # as docs/protocol.md's JSON Schemas describe them
            check_frame(frame)
    cursor = realtime.protocol.encode_cursor({"tasks": (subscribed["epoch"], 1)})
    async with open_sse(
        f"{server.http_url}/realtime/sse/?stream=tasks", headers={"Last-Event-ID": cursor}
    ) as sse:
        kinds = [(await sse.next_event())["event"] for _ in range(3)]
        assert kinds == ["realtime.welcome", "realtime.subscribed", "realtime.snapshot"]
        snap = sse.received[-1]
        assert (snap["data"]["type"], snap["data"]["seq"]) == ("snapshot", 6)
        assert len(snap["data"]["data"]["objects"]) == 6 and snap["id"]


async def test_live_rule_on_a_real_server(daphne_server: Any) -> None:
    server = daphne_server()
    task = await Task.objects.acreate(title="x")
    async with WSClient(server.ws_url + WS) as ws:
        await ws.recv_until(lambda f: f["type"] == "welcome")
        for stream, expected in [
            (f"tasks:{task.pk}", "subscribed"),
            ("tasks:999999", "error"),
            ("tasks:abc", "error"),
        ]:
            await ws.send_json({"type": "subscribe", "id": stream, "stream": stream})
            frame = await ws.recv_json()
            assert (frame["id"], frame["type"]) == (stream, expected)
        await ws.send_json(
            {"type": "publish", "id": "p", "stream": "tasks", "event": "task.created", "data": {}}
        )
        refused = await ws.recv_json()
        assert (refused["id"], refused["code"]) == ("p", "forbidden")


@pytest.mark.django_db(transaction=True, databases=["default", "archive"])
def test_a_save_on_another_database_publishes_when_that_database_commits() -> None:
    """No transaction spans two databases: the event waits for the change's own commit."""
    with transaction.atomic(using="archive"):
        Task(title="archived").save(using="archive")
        assert stored("tasks") == []  # not published before the change is committed
    assert events("tasks") == ["task.created"]
    assert stored("tasks")[0][2]["title"] == "archived"

    with pytest.raises(ZeroDivisionError), transaction.atomic(using="archive"):
        Task(title="rolled back").save(using="archive")
        1 / 0  # noqa: B018
    assert events("tasks") == ["task.created"]  # the rollback published nothing
    assert [t.title for t in Task.objects.using("archive").all()] == ["archived"]
