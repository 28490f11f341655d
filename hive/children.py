"""Child processes that never outlive the process that started them.

``hive up`` runs its servers and services in sessions of their own (so a Ctrl-C reaches
``hive up`` alone, which then stops them in order). Killed with SIGKILL, ``hive up`` could
not stop them, and they would run on unsupervised, holding the ports. On Linux a child can
ask the kernel for a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``); each child
asks for SIGTERM, the signal of an orderly stop, between fork and exec.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()  # loaded before any fork: the child only makes the call


def _ask_for_sigterm() -> None:
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def tied_to_parent() -> Callable[[], None] | None:
    """``preexec_fn`` for ``subprocess.Popen``. The kernel signals when the *thread* that
    forked exits, so only children started from the main thread are tied (a worker thread
    of an executor may end long before the process)."""
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    return _ask_for_sigterm
