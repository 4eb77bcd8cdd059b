"""The task board demo: a page that shows ``Task`` rows live, and small JSON views that
change them.

The page renders the rows with the position of the ``tasks`` stream read *before* them, and
the browser subscribes from that position: every change committed after the read arrives as
an event, and one the rows already hold is applied again harmlessly (events are upserts).

The JSON views are async and save through ``asave()`` / ``adelete()``: the live model
publishes from the worker thread Django runs the ORM in, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from project.demo.models import Task
from realtime import live
from realtime.storage import store

STREAM = "tasks"
MAX_TITLE = 200


def board(request: HttpRequest) -> HttpResponse:
    """``GET /tasks/``: the board, live."""
    position = store.stream_info(STREAM)  # first the position, then the rows it precedes
    registration = live.get(Task)
    assert registration is not None
    tasks = [registration.payload(task) for task in Task.objects.all()]
    state = {
        "stream": STREAM,
        "epoch": position.epoch if position else None,
        "seq": position.last_seq if position else 0,
        "tasks": tasks,
    }
    return render(request, "demo/board.html", {"state": state, "tasks": tasks})


def _body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": "The body must be JSON."}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"error": "The body must be a JSON object."}, status=400)
    return body


def _title(value: Any) -> str | JsonResponse:
    title = str(value or "").strip()
    if not title:
        return JsonResponse({"error": "Give the task a title."}, status=400)
    return title[:MAX_TITLE]


@require_http_methods(["POST"])
async def create_task(request: HttpRequest) -> JsonResponse:
    """``POST /tasks/new/`` ``{"title": ...}``: add a task (it appears through its event)."""
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    title = _title(body.get("title"))
    if isinstance(title, JsonResponse):
        return title
    task = await Task.objects.acreate(title=title)
    return JsonResponse({"id": task.pk}, status=201)


@require_http_methods(["POST", "DELETE"])
async def change_task(request: HttpRequest, pk: int) -> HttpResponse:
    """``POST /tasks/<pk>/`` ``{"done": bool, "title": str}`` changes it; ``DELETE`` removes it."""
    task = await Task.objects.filter(pk=pk).afirst()
    if task is None:
        return JsonResponse({"error": "No such task (deleted meanwhile?)."}, status=404)
    if request.method == "DELETE":
        await task.adelete()
        return HttpResponse(status=204)
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    if "done" in body:
        if not isinstance(body["done"], bool):
            return JsonResponse({"error": "`done` is true or false."}, status=400)
        task.done = body["done"]
    if "title" in body:
        title = _title(body["title"])
        if isinstance(title, JsonResponse):
            return title
        task.title = title
    await task.asave()
    return JsonResponse({"id": task.pk})
