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

# What a waiting block sets and clears: plain assignments, no lock and no wake-up of the
# watcher on each step (a thread woken every step competes for the cores with the ranks,
# which spin while they wait for each other). The watcher looks a few times per timeout.
_state: dict = {"timeout": None, "deadline": None, "what": "", "depth": 0}
_start = threading.Lock()
_thread: list[threading.Thread] = []


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
    while True:
        timeout = get_timeout()
        time.sleep(min(1.0, timeout / 8))
        deadline = _state["deadline"]
        if deadline is not None and time.monotonic() > deadline:
            _expired(_state["what"], timeout)


@contextlib.contextmanager
def waiting(what: str) -> Iterator[None]:
    """Within this block, waiting longer than the timeout aborts the job (nested blocks share
    the outermost deadline). Used from one thread at a time (a step holds its parameters'
    locks; numpy's reductions run inside it)."""
    if not _thread:
        with _start:
            if not _thread:
                _thread.append(threading.Thread(target=_watch, name="graphc-dist-watchdog",
                                                daemon=True))
                _thread[0].start()
    outer = _state["depth"] == 0
    if outer:
        _state["what"] = what
        _state["deadline"] = time.monotonic() + get_timeout()
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if outer:
            _state["deadline"] = None
