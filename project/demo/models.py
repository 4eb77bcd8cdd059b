"""The demo's task board: a live model. Every change — on the board page, in the admin, from
``manage.py shell`` — reaches every open board at once."""

from __future__ import annotations

from typing import Any

from django.db import models

from realtime import live


def anyone(user: Any, stream: str, obj: Task | None) -> bool:
    """The demo board is public: anyone may watch it (a real app would check ``user``)."""
    return True


@live.register(
    streams=["tasks", "tasks:{pk}"],
    fields=["id", "title", "done", "created_at", "updated_at"],
    snapshot=True,
    can_subscribe=anyone,
)
class Task(models.Model):
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.title
