"""Short garbage-collector pauses in server processes: the startup heap is frozen once, and
the youngest generation collected less often.

CPython's cyclic collector stops the whole process while a full (oldest-generation) pass
walks every tracked object. A server process holds a large, permanent heap — Django, the
URLconf, every imported module, the app's own — so on this project's benchmark machine
those passes took 70-100 ms each, a few times a minute, and they were the p99 of
publish-to-receive latency: every connection of the process waits for them. ``gc.freeze()``
moves what exists to a permanent generation that full passes skip (the technique Instagram
described for pre-forked Django servers), which took the passes to 7-28 ms there.

Every connection a process opens adds a few hundred long-lived objects (the server's
protocol, the app's connection, their buffers). Counted against CPython's default of 700
allocations per young collection, a storm of handshakes set off a full pass every 70,000 of
them: about a tenth of the server's CPU while 2,000 clients connected. The youngest
generation's threshold is raised to ``YOUNG_THRESHOLD`` (never lowered), which leaves most
of those full passes out; a young pass then walks up to that many objects (well under a
millisecond), and cyclic garbage waits a little longer to be freed.

It runs once per process, when its hub starts (the first connection: by then the server has
imported everything it serves with), after one full collection so that no garbage is frozen
with the rest. Objects created later are collected as usual; only cyclic garbage among the
frozen objects could never be freed, and what exists at that point lives as long as the
process anyway. ``REALTIME["GC_FREEZE"] = False`` turns all of it off.
"""

from __future__ import annotations

import gc
import logging
import os
import time

logger = logging.getLogger("realtime.hub")

_frozen_in: int | None = None  # the pid that froze its heap (a forked child starts afresh)

# Allocations (less deallocations) between two collections of the youngest generation.
YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> bool:
    """Collect, then freeze what is left and raise the young threshold, once per process;
    True if this call did it."""
    global _frozen_in
    if _frozen_in == os.getpid():
        return False
    _frozen_in = os.getpid()
    began = time.perf_counter()
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), *older)
    logger.info(
        "Froze %s objects out of the garbage collector's full passes (%.0f ms).",
        gc.get_freeze_count(),
        (time.perf_counter() - began) * 1000,
    )
    return True
