"""``realtime.testing.capture_published``: what was stored, what was sent, after commit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.test import TestCase, TransactionTestCase
from rest_framework.test import APIClient

import realtime
from realtime.testing import Published, capture_published

TOKEN = "capture-token-" + "x" * 32


def test_a_publish_outside_a_transaction_is_stored_and_sent(transactional_db: None) -> None:
    with capture_published() as captured:
        realtime.publish("chat:1", "message", {"text": "hi"})
        realtime.publish("chat:2", "message", None)
    assert captured.events == [
        Published("chat:1", "message", {"text": "hi"}, 1),
        ("chat:2", "message", None, 1),
    ]
    assert captured.sent == captured.events
    assert captured.on("chat:2") == [("chat:2", "message", None, 1)]
    assert captured.types() == ["message", "message"]


def test_only_the_block_is_recorded(transactional_db: None) -> None:
    realtime.publish("chat:1", "before")
    with capture_published() as captured:
        realtime.publish("chat:1", "during")
    realtime.publish("chat:1", "after")
    assert captured.types() == ["during"]
    assert captured.sent == [("chat:1", "during", None, 2)]


def test_inside_atomic_stored_at_once_and_sent_at_commit(transactional_db: None) -> None:
    with capture_published() as captured:
        with transaction.atomic():
            realtime.publish("orders:1", "order.paid", {"n": 1})
            assert captured.events == [("orders:1", "order.paid", {"n": 1}, 1)]
            assert captured.sent == []
        assert captured.sent == [("orders:1", "order.paid", {"n": 1}, 1)]
    assert captured.events == captured.sent


def test_a_rollback_sends_nothing_and_drops_the_event(transactional_db: None) -> None:
    with capture_published() as captured:
        with pytest.raises(RuntimeError), transaction.atomic():
            realtime.publish("orders:1", "order.paid")
            assert captured.types() == ["order.paid"]
            raise RuntimeError("payment failed")
        realtime.publish("orders:1", "order.cancelled")
    # The rolled-back seq is reused, as documented.
    assert captured.events == [("orders:1", "order.cancelled", None, 1)]
    assert captured.sent == captured.events


def test_a_rolled_back_savepoint_drops_its_events_only(transactional_db: None) -> None:
    with capture_published() as captured, transaction.atomic():
        realtime.publish("orders:1", "kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            realtime.publish("orders:1", "undone")
            raise RuntimeError
        realtime.publish_many("orders:1", [("many.a", 1), ("many.b", 2)])
        assert captured.types() == ["kept", "many.a", "many.b"]
        assert captured.sent == []
    assert [(e.event, e.seq) for e in captured.sent] == [("kept", 1), ("many.a", 2), ("many.b", 3)]


def test_a_commit_after_the_block_keeps_the_event(transactional_db: None) -> None:
    with transaction.atomic(), capture_published() as committed:
        realtime.publish("orders:1", "kept")
    assert committed.events == [("orders:1", "kept", None, 1)]
    assert committed.sent == []  # sent after the block
    with pytest.raises(RuntimeError), transaction.atomic():
        with capture_published() as rolled_back:
            realtime.publish("orders:1", "undone")
        raise RuntimeError
    assert rolled_back.events == []


def test_ephemeral_events_have_no_seq_and_are_sent_at_once(transactional_db: None) -> None:
    with capture_published() as captured, transaction.atomic():
        realtime.publish("cursors:1", "move", {"x": 1}, ephemeral=True)
        assert captured.sent == [("cursors:1", "move", {"x": 1}, None)]
    assert captured.events == captured.sent


def test_a_repeated_idempotency_key_publishes_nothing(transactional_db: None) -> None:
    with capture_published() as captured:
        realtime.publish("orders:1", "order.paid", idempotency_key="k1")
        realtime.publish("orders:1", "order.paid", idempotency_key="k1")
    assert captured.events == captured.sent == [("orders:1", "order.paid", None, 1)]


def test_resets_are_recorded(transactional_db: None) -> None:
    realtime.publish("orders:1", "x")
    with capture_published() as captured:
        realtime.reset("orders:1")
    assert captured.resets == ["orders:1"] and captured.events == []


@pytest.mark.django_db(transaction=True)
async def test_async_publishes_and_async_with() -> None:
    async with capture_published() as captured:
        await realtime.apublish("chat:1", "a", [1])
        await realtime.apublish("chat:1", "typing", None, ephemeral=True)
        await realtime.apublish_many("chat:1", [("b", None), ("c", None)])
    assert captured.events == [
        ("chat:1", "a", [1], 1),
        ("chat:1", "typing", None, None),
        ("chat:1", "b", None, 2),
        ("chat:1", "c", None, 3),
    ]
    assert captured.sent == captured.events


def test_nested_blocks_each_record_everything_in_them(transactional_db: None) -> None:
    with capture_published() as outer:
        realtime.publish("chat:1", "a")
        with capture_published() as inner:
            realtime.publish("chat:1", "b")
    assert outer.types() == ["a", "b"] and inner.types() == ["b"]


def test_live_model_changes(transactional_db: None) -> None:
    from project.demo.models import Task

    with capture_published() as captured:
        task = Task.objects.create(title="write tests")
        task.done = True
        task.save()
        task.delete()
    assert [(e.stream, e.event) for e in captured.events] == [
        ("tasks", "task.created"),
        (f"tasks:{task_id(captured)}", "task.created"),
        ("tasks", "task.updated"),
        (f"tasks:{task_id(captured)}", "task.updated"),
        ("tasks", "task.deleted"),
        (f"tasks:{task_id(captured)}", "task.deleted"),
    ]
    assert captured.events[2].data["done"] is True
    assert captured.sent == captured.events


def task_id(captured: Any) -> int:
    return int(captured.events[0].data["id"])


def test_rest_api_publishes(transactional_db: None, settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "API_TOKENS": [TOKEN]}
    api = APIClient(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    body = json.dumps({"event": "order.paid", "data": {"n": 1}})
    with capture_published() as captured:
        response = api.post(
            "/realtime/api/streams/orders:1/events/", body, content_type="application/json"
        )
    assert response.status_code == 201, response.content
    assert captured.events == captured.sent == [("orders:1", "order.paid", {"n": 1}, 1)]


class UnderTestCase(TestCase):
    """Django's ``TestCase``: the test is one transaction that never commits."""

    def test_stored_but_not_sent(self) -> None:
        with capture_published() as captured:
            realtime.publish("chat:1", "message", "hi")
        assert captured.events == [("chat:1", "message", "hi", 1)]
        assert captured.sent == []

    def test_sent_when_on_commit_callbacks_run(self) -> None:
        with (
            capture_published() as captured,
            self.captureOnCommitCallbacks(execute=True) as callbacks,
        ):
            realtime.publish("chat:1", "message", "hi")
        assert len(callbacks) == 1
        assert captured.sent == captured.events == [("chat:1", "message", "hi", 1)]

    def test_a_rolled_back_savepoint_is_left_out(self) -> None:
        with capture_published() as captured, self.captureOnCommitCallbacks(execute=True):
            with self.assertRaises(RuntimeError), transaction.atomic():
                realtime.publish("chat:1", "undone")
                raise RuntimeError
            realtime.publish("chat:1", "kept")
        assert captured.events == captured.sent == [("chat:1", "kept", None, 1)]

    def test_live_models(self) -> None:
        from project.demo.models import Task

        with capture_published() as captured:
            Task.objects.create(title="write tests")
        assert captured.types() == ["task.created", "task.created"]
        assert captured.sent == []

    def test_a_live_batch_is_one_event_per_stream(self) -> None:
        from project.demo.models import Task
        from realtime import live

        with (
            capture_published() as captured,
            self.captureOnCommitCallbacks(execute=True),
            live.batch(),
        ):
            Task.objects.create(title="a")
            Task.objects.create(title="b")
        [batch] = captured.on("tasks")
        assert batch.event == "task.batch"
        assert [change["data"]["title"] for change in batch.data["changes"]] == ["a", "b"]
        assert captured.sent == captured.events

    def test_rest_api_publishes_in_the_test_transaction(self) -> None:
        api = APIClient(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        body = json.dumps({"event": "order.paid", "data": {"n": 1}})
        with (
            self.settings(REALTIME={**settings.REALTIME, "API_TOKENS": [TOKEN]}),
            capture_published() as captured,
        ):
            response = api.post(
                "/realtime/api/streams/orders:1/events/", body, content_type="application/json"
            )
        assert response.status_code == 201, response.content
        assert captured.events == [("orders:1", "order.paid", {"n": 1}, 1)]
        assert captured.sent == []


class UnderTransactionTestCase(TransactionTestCase):
    def test_sent_at_commit(self) -> None:
        with capture_published() as captured:
            with transaction.atomic():
                realtime.publish("chat:1", "message")
                assert captured.sent == []
            assert captured.sent == [("chat:1", "message", None, 1)]
