"""Public path of snapshot hooks (``register``); the code is ``realtime.core.snapshots``."""

from realtime.core.snapshots import Snapshot, register, unregister

__all__ = ["Snapshot", "register", "unregister"]
