"""The arena's memory: aligned, writable, private to this process (a forked child's writes
never reach it), the same as before for small arenas, and a clear error when too large."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from graphc.backends.llvm.arena import HUGE_MIN_BYTES, arena_memory


@pytest.mark.parametrize("nbytes", [0, 100, HUGE_MIN_BYTES - 1, HUGE_MIN_BYTES,
                                    HUGE_MIN_BYTES + 12345])
def test_aligned_and_writable(nbytes):
    a = arena_memory(nbytes)
    assert a.dtype == np.uint8 and a.shape == (nbytes,)
    assert a.flags.writeable and (nbytes == 0 or a.ctypes.data % 64 == 0)
    a[:] = 7
    assert not nbytes or int(a.sum()) == 7 * nbytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux")
def test_a_forked_childs_writes_stay_in_the_child():
    a = arena_memory(HUGE_MIN_BYTES * 2)
    a[:16] = 1
    pid = os.fork()
    if pid == 0:
        a[:16] = 2
        os._exit(0)
    os.waitpid(pid, 0)
    assert (a[:16] == 1).all()


def test_too_large_is_a_memory_error():
    with pytest.raises(MemoryError, match="too large"):
        arena_memory(2 ** 63)
