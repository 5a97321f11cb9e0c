"""How a serving process keeps Python's garbage collector off the decision path.

Measured on a replica under load (bench/floor.py, a `gc.callbacks` probe): with CPython's default
thresholds (700, 10, 10) the collector ran ~400 young passes a second and, every second or so, a
full pass over everything alive — 80 ms each while the replica remembered decisions as dict trees,
every one of them a pause in the middle of some requests. So, once start-up is done:

* what start-up built (modules, the compiled policy set, ORM metadata, pools) is frozen: it lives
  as long as the process and no later pass looks at it again;
* young passes wait for `YOUNG_THRESHOLD` new container objects instead of 700: a request's objects
  are mostly gone by then, so fewer of them survive into the older generations, and the full pass
  (whose cost grows with what is alive) comes rarely and finds little.

Cyclic garbage waits a little longer to be freed: tens of thousands of small objects at most.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "OLDER_THRESHOLDS", "settle_after_startup"]

#: Allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 10_000
#: Young collections per middle one, middle per full one (CPython's defaults: 10, 10).
OLDER_THRESHOLDS = (20, 20)


def settle_after_startup() -> None:
    """Collect once, freeze what is alive, and space the collector's passes out (see the module)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
