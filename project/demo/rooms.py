"""The chat and live-cursors demos: pages whose browser client (``realtime.js``) does the
work. Anyone may publish on their streams (``REALTIME["RULES"]`` in ``project.settings``).

Both pages are rooms: ``/chat/`` and ``/chat/<room>/`` use the stream ``public:chat:<room>``,
``/cursors/`` and ``/cursors/<room>/`` the stream ``public:cursors:<room>``.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

DEFAULT_ROOM = "lobby"


def chat(request: HttpRequest, room: str = DEFAULT_ROOM) -> HttpResponse:
    """A chat room: history on arrival, live messages, who is online, who is typing."""
    return render(request, "demo/chat.html", {"room": room, "stream": f"public:chat:{room}"})


def cursors(request: HttpRequest, room: str = DEFAULT_ROOM) -> HttpResponse:
    """Everyone's pointer on one board, as ephemeral events: nothing is stored."""
    return render(request, "demo/cursors.html", {"room": room, "stream": f"public:cursors:{room}"})
