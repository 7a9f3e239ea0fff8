"""Worker processes for the synthetic-data writers, safe to start from a process that has used threads.

The writers render frames in a ``multiprocessing`` pool. They fork where the platform can (Linux): unlike spawn,
fork does not re-import the caller's ``__main__``, so a user's script without an ``if __name__ == "__main__"`` guard
does not start itself again. A forked child inherits the parent's memory, including objects that are already
garbage but not yet collected, such as an onnxruntime session from an earlier export or inference. When the child's
garbage collector finalises such an object, its destructor waits on a condition variable of a thread that does not
exist in the child, and the pool hangs (seen in the test suite: ``HumanParser`` sessions, then
``generate_nturgbd_parsing``).

:func:`worker_pool` therefore collects the parent's garbage first (where its threads are alive) and freezes the
surviving objects (``gc.freeze``, the standard library's remedy for fork) while the workers are forked, so no child
finalises an inherited object.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool

__all__ = ["worker_pool"]


@contextmanager
def worker_pool(workers: int) -> Iterator[Pool]:
    """A pool of ``workers`` processes (fork where available, else spawn), closed and joined on exit; the parent's
    garbage is collected and its objects frozen while the workers start (see the module docstring)."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    gc.collect()
    gc.freeze()
    try:
        pool = ctx.Pool(int(workers))
    finally:
        gc.unfreeze()
    with pool:
        yield pool
