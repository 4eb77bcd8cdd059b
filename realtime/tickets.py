"""Public path of connection tickets (``issue``); the code is ``realtime.storage.tickets``."""

from realtime.storage.tickets import issue

__all__ = ["issue"]
