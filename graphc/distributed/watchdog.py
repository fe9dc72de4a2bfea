"""A deadline on waits for other processes: a rank that died or stopped stepping ends the
job with a message instead of leaving the others blocked in a collective for ever."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Iterator

# Seconds a step may wait for the other processes (compute included); GRAPHC_DIST_TIMEOUT.
DEFAULT_TIMEOUT = 300.0

_lock = threading.Condition()
_state: dict = {"timeout": None, "deadline": None, "what": "", "thread": None, "depth": 0}


def get_timeout() -> float:
    if _state["timeout"] is None:
        raw = os.environ.get("GRAPHC_DIST_TIMEOUT", "")
        try:
            _state["timeout"] = float(raw) if raw else DEFAULT_TIMEOUT
        except ValueError:
            raise ValueError(f"GRAPHC_DIST_TIMEOUT must be a number of seconds, got {raw!r}"
                             ) from None
    return float(_state["timeout"])


def set_timeout(seconds: float) -> None:
    """How long a collective (and the step around it) may wait for the other processes
    before this one aborts the job with an error naming the wait."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"set_timeout: seconds must be a number > 0, got {seconds!r}")
    with _lock:
        _state["timeout"] = float(seconds)


def _expired(what: str, timeout: float) -> None:
    from graphc.distributed.comm import rank, world
    sys.stderr.write(f"graphc.distributed: rank {rank()} waited more than {timeout:g} s in "
                     f"{what}: another process died or stopped calling the step; aborting "
                     "the job (gc.distributed.set_timeout sets the limit)\n")
    sys.stderr.flush()
    comm = world()
    if comm is not None:
        comm.Abort(3)
    os._exit(3)


def _watch() -> None:
    with _lock:
        while True:
            deadline = _state["deadline"]
            if deadline is None:
                _lock.wait()
                continue
            left = deadline - time.monotonic()
            if left > 0:
                _lock.wait(left)
                continue
            what, timeout = _state["what"], get_timeout()
            break
    _expired(what, timeout)


@contextlib.contextmanager
def waiting(what: str) -> Iterator[None]:
    """Within this block, waiting longer than the timeout aborts the job (nested blocks share
    the outermost deadline)."""
    timeout = get_timeout()
    with _lock:
        if _state["thread"] is None:
            thread = threading.Thread(target=_watch, name="graphc-dist-watchdog", daemon=True)
            _state["thread"] = thread
            thread.start()
        outer = _state["depth"] == 0
        if outer:
            _state["deadline"] = time.monotonic() + timeout
            _state["what"] = what
        _state["depth"] += 1
        _lock.notify()
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if outer:
                _state["deadline"] = None
            _lock.notify()
