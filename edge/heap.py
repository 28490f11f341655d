"""The cyclic collector's settings for a long-running service (coordinator, node).

Their objects die by reference counting: an event, its frames, its futures. Yet with
CPython's default thresholds the collector ran about every 700 allocations and, a few
times a minute under load, walked every object the process holds (modules, the loaded
projection) for 50 ms or more. That cost 10-12% of a node's CPU and 6% of the
coordinator's in ``benchmarks/throughput.py``. So, once a service is ready:

* what is alive then (imports, the state it loaded) is frozen: never walked again, still
  freed by reference counting when it goes;
* the youngest generation holds ``YOUNG`` objects before a collection, so most of a
  burst's objects are gone before one runs. Cyclic garbage still gets collected; at most
  that many objects more wait for it.
"""

from __future__ import annotations

import gc

YOUNG = 10_000


def settle() -> None:
    """Call once the service is ready (its startup's objects are the long-lived ones)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
