"""A child process's life tied to its parent's: on Linux the kernel signals the child when the
parent dies without stopping it (SIGKILL, a crash), so nothing devtunnel started outlives it
holding a port or a tunnel. Elsewhere these do nothing (the parent's normal stop still stops
its children)."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["die_with_parent", "follow_parent"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """On Linux, a function that has the kernel send ``signum`` to the calling process when its
    parent dies; None elsewhere. Made once and ahead of time, so a forked child (``preexec_fn``)
    calls only what is already loaded.

    The kernel watches the *thread* that started the child, not the whole process: children
    that use this are started from the event loop's thread, which lives as long as the process
    (a child started from a worker thread would be signalled when that thread ends)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, _PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def follow_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """In a child that was started by ``parent_pid``: receive ``signum`` when that parent dies,
    at once if it died already (the kernel only watches from now on)."""
    arm = die_with_parent(signum)
    if arm is None:
        return
    arm()
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
