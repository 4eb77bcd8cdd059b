"""The demo: one page that shows a stream live and a form that publishes to it."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

import realtime
from realtime.exceptions import RealtimeError

DEFAULT_STREAM = "public:lobby"


def index(request: HttpRequest) -> HttpResponse:
    stream = request.GET.get("stream", DEFAULT_STREAM)
    return render(request, "demo/index.html", {"stream": stream})


@require_POST
def publish_message(request: HttpRequest) -> JsonResponse:
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": "Body must be JSON."}, status=400)
    stream = payload.get("stream") or DEFAULT_STREAM
    text = str(payload.get("text", "")).strip()
    if not text:
        return JsonResponse({"error": "Write a message first."}, status=400)
    if not str(stream).startswith("public:"):
        return JsonResponse({"error": "The demo only publishes to public: streams."}, status=403)
    try:
        event = realtime.publish(
            stream, "message.created", {"text": text[:500], "author": payload.get("author", "")}
        )
    except RealtimeError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    return JsonResponse({"stream": stream, "seq": event.seq})
