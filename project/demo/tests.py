"""Tests of the demo's live task board, written as a project would write them with
``realtime.testing`` (docs/testing.md). The suite runs them from
``tests/integration/test_demo_project.py``."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, TestCase

from realtime.testing import WebSocketClient, capture_published


class TaskBoardPublishes(TestCase):
    """Under ``TestCase`` nothing commits: events are stored, and sent only when the test
    runs the on-commit callbacks."""

    def test_a_new_task_is_announced_after_commit(self) -> None:
        with capture_published() as captured, self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                "/tasks/new/", {"title": "Write tests"}, content_type="application/json"
            )
            assert captured.sent == []  # not committed yet
        assert response.status_code == 201
        task_id = response.json()["id"]
        assert [(e.stream, e.event) for e in captured.sent] == [
            ("tasks", "task.created"),
            (f"tasks:{task_id}", "task.created"),
        ]
        assert captured.sent[0].data["title"] == "Write tests"

    def test_a_refused_task_publishes_nothing(self) -> None:
        with capture_published() as captured:
            response = self.client.post(
                "/tasks/new/", {"title": " "}, content_type="application/json"
            )
        assert response.status_code == 400
        assert captured.events == []


@pytest.mark.django_db(transaction=True)
async def test_an_open_board_sees_a_new_task() -> None:
    """The endpoint in this process, the real hub and channel layer: no server to start."""
    async with WebSocketClient() as board:
        await board.subscribe("tasks")
        response = await AsyncClient().post(
            "/tasks/new/", {"title": "Ship it"}, content_type="application/json"
        )
        assert response.status_code == 201
        frame = await board.next_event("tasks")
        assert frame["event"] == "task.created"
        assert frame["data"]["title"] == "Ship it"
