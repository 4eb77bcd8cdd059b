"""Settings of the daphne process ``bench.storm`` measures: the demo's, plus a count of
every SQL statement it runs (written to ``STORM_COUNTS``), and a per-IP cap high enough for
thousands of clients on one loopback address (the cap's query still runs, as in production)."""

import json
import os
import re
import threading
import time
from collections import Counter
from typing import Any

from project.settings import *  # noqa: F403
from project.settings import REALTIME

REALTIME = {**REALTIME, "MAX_CONNECTIONS_PER_IP": 1_000_000}


# The most database connections the process had open (or out of its pool) at once.
PEAK = "peak connections in use"
TABLE_RE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?([A-Za-z0-9_]+)"?', re.IGNORECASE)


def statement_kind(sql: str) -> str:
    """``SELECT realtime_connection``: the statement's first word and first table, if any."""
    words = sql.lstrip().split(None, 1) or ["?"]
    table = TABLE_RE.search(sql)
    return words[0].upper() + (f" {table.group(1)}" if table else "")


def count_statements() -> None:
    """Count every SQL statement by kind (first word and table), every database connection
    opened (or taken from the pool), and the most in use at once (``PEAK``); a thread writes
    the counts to ``STORM_COUNTS`` every 0.25 s when they changed."""
    path = os.environ.get("STORM_COUNTS")
    if not path:
        return
    from django.db.backends.signals import connection_created

    counts: Counter[str] = Counter()
    lock = threading.Lock()
    in_use = 0

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts[statement_kind(sql)] += 1
        return execute(sql, params, many, context)

    def created(sender: Any, connection: Any, **kwargs: Any) -> None:
        nonlocal in_use
        with lock:
            counts["connections opened"] += 1
            in_use += 1
            counts[PEAK] = max(counts[PEAK], in_use)
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)
            close = connection._close

            def released() -> Any:
                nonlocal in_use
                with lock:
                    in_use -= 1
                return close()

            connection._close = released

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
