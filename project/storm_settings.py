"""Settings of the daphne process ``project.storm`` measures: the demo's, plus a count of
every SQL statement it runs (written to ``STORM_COUNTS``), and a per-IP cap high enough for a
thousand clients on one loopback address (the cap's query still runs, as in production)."""

import json
import os
import threading
import time
from collections import Counter
from typing import Any

from project.settings import *  # noqa: F403
from project.settings import REALTIME

REALTIME = {**REALTIME, "MAX_CONNECTIONS_PER_IP": 1_000_000}


def count_statements() -> None:
    """Count every SQL statement by its first word, and every database connection opened;
    a thread writes the counts to ``STORM_COUNTS`` every 0.25 s when they changed."""
    path = os.environ.get("STORM_COUNTS")
    if not path:
        return
    from django.db.backends.signals import connection_created

    counts: Counter[str] = Counter()

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts[(sql.lstrip().split(None, 1) or ["?"])[0].upper()] += 1
        return execute(sql, params, many, context)

    def created(sender: Any, connection: Any, **kwargs: Any) -> None:
        counts["connections opened"] += 1
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    connection_created.connect(created, weak=False, dispatch_uid="storm.count")

    def dump() -> None:
        tmp, written = path + ".tmp", None
        while True:
            time.sleep(0.25)
            current = dict(counts)
            if current != written:
                with open(tmp, "w") as out:
                    json.dump(current, out)
                os.replace(tmp, path)
                written = current

    threading.Thread(target=dump, name="storm-counts", daemon=True).start()


count_statements()
