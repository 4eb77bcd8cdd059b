"""A test-only app: appends every realtime signal a daphne process sends to a JSON-lines file.

Signals fire inside the server processes; tests read ``REALTIME_TEST_SIGNAL_LOG`` to check
they fired exactly once per transition, whichever process made it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from django.apps import AppConfig


def _record(name: str) -> Any:
    def receiver(sender: Any, **kwargs: Any) -> None:
        path = os.environ.get("REALTIME_TEST_SIGNAL_LOG")
        if not path:
            return
        user = kwargs.get("user")
        entry = {
            "signal": name,
            "user": getattr(user, "pk", None),
            "stream": kwargs.get("stream"),
            "key": kwargs.get("key"),
            "pid": os.getpid(),
        }
        if name.startswith("alert_"):
            entry.update({k: kwargs.get(k) for k in ("name", "value", "threshold", "server")})
        with open(path, "a") as log:
            log.write(json.dumps(entry) + "\n")

    return receiver


class SignalLogConfig(AppConfig):
    name = "tests.signal_log"
    label = "signal_log"

    def ready(self) -> None:
        from realtime import signals

        for name in (
            "presence_joined",
            "presence_left",
            "user_online",
            "user_offline",
            "alert_raised",
            "alert_cleared",
        ):
            getattr(signals, name).connect(
                _record(name), weak=False, dispatch_uid=f"signal_log.{name}"
            )
