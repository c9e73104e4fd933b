"""Long work at a lower CPU priority than serving.

A slide being ingested, a fixity run, a job worker: work that takes seconds to hours and whose
client can wait a little longer. Tile requests cannot: a pathologist panning a slide asks for
dozens of frames a second. Where both share the host's cores, the scheduler is told which comes
first, as ``nice`` would: the threads of long work run at the nice value ``background_nice``
(``LAMINA_BACKGROUND_NICE``, default 19, the lowest; 0 leaves them as they are). They still get
the CPU the serving threads leave (a nice value weighs, it never starves: at 19 against 0 it is
about 1.5 % of a core that both want), so long work ends as soon on an idle host and yields when
the host is busy. Measured with ``benchmarks/serving.py --quick`` (a 0.3 GB slide stored by
STOW-RS and verified while frames are read at 4 connections, 2 cores): frames served under load
+20 to +40 %, their p99 lower, the STOW-RS 1 to 2 s longer.

On Linux the nice value belongs to a thread, and the threads it starts inherit it: lowering it
on the thread that runs long work (or on a CLI process's main thread before it starts its
workers) leaves the event loop and the request threads where they were. Raising it back needs a
privilege a server does not have, so only threads that do nothing else are lowered. Elsewhere
(macOS, Windows) a thread's priority cannot be set this way and nothing is changed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("lamina.priority")

__all__ = ["background_pool", "lower_priority"]

#: The largest nice value (the lowest priority) a thread can be given.
MAX_NICE = 19


def lower_priority(nice: int) -> bool:
    """Run the calling thread (and the threads it starts from now on) at ``nice``, if that is
    lower than its priority now; True when the thread now runs at ``nice`` or lower."""
    if nice <= 0 or sys.platform != "linux":
        return False
    nice = min(nice, MAX_NICE)
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:  # a container without the call; the work runs, at its priority
        log.debug("could not lower the priority of thread %d to nice %d: %s", tid, nice, exc)
        return False
    return True


def background_pool(workers: int, nice: int, name: str) -> ThreadPoolExecutor:
    """A bounded pool whose threads run at ``nice`` (:func:`lower_priority`), for long work
    started by a request (the embedded STOW-RS ingest)."""
    return ThreadPoolExecutor(
        max_workers=max(1, workers), thread_name_prefix=name, initializer=lower_priority, initargs=(nice,)
    )
