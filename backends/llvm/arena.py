"""A symbolic program's scratch memory (its arena): one anonymous mapping in 4 KiB pages that
grows in place, keeping the pages already mapped, and whose new pages a helper thread maps
ahead of the calls that use them.

A page's first write costs the kernel ~1.5-3.5 us on this VM (W5's first call at batch 131
after 64 took 6,446 of them: 9 ms of a 4 ms step). Growing the mapping with mremap keeps the
pages mapped so far, and MADV_POPULATE_WRITE (Linux 5.14) maps a range without writing it, so
the helper may run beside calls that use the same pages. After a binding's first call it maps
up to ROOM_AHEAD bytes of the room past that binding's bytes (a slightly larger batch later
finds its pages mapped: resident memory paid for that).

Then the helper also puts the binding's pages into 2 MiB pages (MADV_COLLAPSE, Linux 6.1;
elsewhere they stay in 4 KiB pages). Streaming kernels over 4 KiB pages miss the TLB: W6's
76 MB arena in them made its elementwise and reduction kernels 4-17 % slower than the
specialised module's, whose numpy arena is in 2 MiB pages (docs/sizes.md, 2026-12-04,
"The arena's pages"). Collapsing pages already written takes the helper ~30 ms for 76 MB,
beside the calls; asking for 2 MiB pages at the first write instead would stall that call
while the kernel compacts memory (0.2-0.4 s for 76 MB here).

The helper runs at idle priority (SCHED_IDLE), on a core no call wants: where memory is
fragmented, collapsing takes the kernel's compaction 0.3-0.9 s of CPU, and at normal
priority that time was taken from the next calls' thread teams (W6's second call after its
compile 0.2-0.46 s instead of ~25 ms). At idle priority the collapse waits for the gaps
between calls (or the single-thread kernels' idle core) and was done within 120 calls."""
from __future__ import annotations

import ctypes
import mmap
import os
import queue
import threading

import numpy as np

MADV_POPULATE_WRITE = 23
MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20
# Arenas smaller than this stay in 4 KiB pages (numpy's threshold for its arrays too): few
# TLB entries cover them.
MIN_HUGE = 4 << 20
# Room past the largest binding's bytes that the helper maps ahead (resident memory paid
# for a later, slightly larger batch): W1 0.3 MiB, W5 6.3 MiB, W6 16 MiB of its 96 MiB room.
ROOM_AHEAD = 16 << 20
# Fewer new bytes than this are left to the call's own page faults (the helper's wake-up
# and hand-over cost more than a few pages' faults).
MIN_AHEAD = 256 << 10


def _mapping(nbytes: int) -> mmap.mmap:
    """`nbytes` of fresh memory, page-aligned, mapped in 4 KiB pages as first written.
    (numpy asks for huge pages for arrays of 4 MiB and more; where the kernel then
    compacts memory to find them, first writing W6's 400 MB arena took 0.9 s more in its
    first call at a new batch: 64 MB took 0.8 s against 0.08 s in 4 KiB pages.)"""
    try:
        if nbytes + 64 >= 2 ** 62:
            raise OverflowError
        return mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE)  # (anonymous, unshared)
    except (OSError, OverflowError):
        raise MemoryError(f"cannot allocate {nbytes} bytes of scratch memory for these "
                          "shapes: too large") from None


class _Job:
    __slots__ = ("memory", "start", "end", "huge", "done")

    def __init__(self, memory: mmap.mmap | None, start: int, end: int,
                 huge: tuple[int, int] | None = None) -> None:
        self.memory = memory  # (kept open, so mapped, until the job is done)
        self.start, self.end = start, end  # addresses to map (none where start == end)
        self.huge = huge  # addresses of written pages to put into 2 MiB pages, or None
        self.done = threading.Event()


class _Helper:
    """One daemon thread for the process: maps the pages of the jobs it is given, the GIL
    released (one madvise call per job)."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.works = True  # False once the kernel refused (before Linux 5.14): never again
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        libc = ctypes.CDLL(None, use_errno=True)
        self.madvise = libc.madvise
        self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.madvise.restype = ctypes.c_int

    def submit(self, job: _Job) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="graphc-arena-pages",
                                               daemon=True)
                self.thread.start()
        self.jobs.put(job)

    def _run(self) -> None:
        _idle_priority()
        while True:
            job = self.jobs.get()
            try:
                if job.end > job.start and \
                        self.madvise(job.start, job.end - job.start, MADV_POPULATE_WRITE) != 0 \
                        and ctypes.get_errno() == 22:
                    self.works = False  # EINVAL: the kernel does not know the advice
                if job.huge is not None:  # (best effort: a kernel without it says EINVAL)
                    self.madvise(job.huge[0], job.huge[1] - job.huge[0], MADV_COLLAPSE)
            finally:
                job.memory = None
                job.done.set()


def _idle_priority() -> None:
    """The calling thread runs only on a core nothing else wants (Linux SCHED_IDLE)."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass


_helper: _Helper | None = None


def _forget_helper() -> None:
    global _helper
    _helper = None  # (a forked child has no helper thread: it starts its own)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


def _the_helper() -> _Helper | None:
    global _helper
    if _helper is None:
        try:
            _helper = _Helper()
        except (OSError, AttributeError):  # (no libc madvise: the calls fault their pages)
            return None
    return _helper if _helper.works else None


class Arena:
    """The scratch memory of one symbolic program. `array`: its bytes as numpy (64-byte
    aligned); `fit(nbytes)` makes room for a binding's bytes (growing the mapping by half
    again, so that a slightly larger batch later takes the same one); `ahead(nbytes)`, after
    its call, asks the helper to map some of the room after them."""

    def __init__(self) -> None:
        self.memory: mmap.mmap | None = None
        self.array = np.zeros(8, np.uint8)  # (no binding yet)
        self.mapped = 0  # bytes from the start mapped, or asked of the helper
        self.huge = 0  # bytes from the start put into 2 MiB pages, or asked of the helper
        self._job: _Job | None = None

    def fit(self, nbytes: int) -> bool:
        """Room for `nbytes` (a binding's, before its call); True where `array` changed (a
        new address). Raises MemoryError naming the bytes where they cannot be had."""
        if nbytes <= self.array.nbytes:
            return False
        self._grow(nbytes)
        return True

    def _grow(self, nbytes: int) -> None:
        for size in (nbytes + nbytes // 2, nbytes):  # (no room to spare: what it needs)
            if self._resized(size):
                return
            try:
                memory = _mapping(size)
            except MemoryError:
                if size == nbytes:
                    raise
                continue
            self.memory, self.mapped, self.huge = memory, 0, 0
            self.array = np.frombuffer(memory, np.uint8)[:size]
            return

    def _resized(self, size: int) -> bool:
        """The mapping grown to `size` in place (mremap: its mapped pages kept), unless
        the helper may still be mapping it or a view of it is held elsewhere."""
        memory = self.memory
        if memory is None or (self._job is not None and not self._job.done.is_set()):
            return False
        old, old_base = len(memory), self.array.ctypes.data
        self.array = np.zeros(8, np.uint8)  # (the view dropped: a mapping with views
        try:                                  # cannot be resized)
            memory.resize(size)
        except (BufferError, OSError, ValueError, SystemError, OverflowError):
            self.array = np.frombuffer(memory, np.uint8)[:old]  # (unchanged)
            return False
        self.array = np.frombuffer(memory, np.uint8)[:size]
        if (self.array.ctypes.data - old_base) % HUGE_PAGE:
            self.huge = 0  # (moved off its 2 MiB grid: the kernel split its 2 MiB pages)
        return True

    def ahead(self, nbytes: int) -> None:
        """After a call with a binding of `nbytes` (its own pages mapped by the call): the
        helper maps up to ROOM_AHEAD bytes of the room after them, and puts the pages the
        call wrote into 2 MiB pages where not done yet. (Beside the call itself it slowed
        it: its faults met the call's, and on two cores it took one from a team.)"""
        memory = self.memory
        if memory is None:
            return
        base = self.array.__array_interface__["data"][0]
        huge = self._huge_range(base, nbytes)
        if nbytes + MIN_AHEAD <= self.mapped and huge is None:
            return
        self.mapped = max(self.mapped, nbytes)
        end = min(len(memory), nbytes + ROOM_AHEAD)
        end -= end % mmap.PAGESIZE
        if end - self.mapped < MIN_AHEAD and huge is None:
            return
        helper = _the_helper()
        if helper is None:
            return
        start = self.mapped - self.mapped % mmap.PAGESIZE
        end = max(end, start)  # (nothing to map: the 2 MiB pages alone)
        job = self._job = _Job(memory, base + start, base + end, huge)
        self.mapped = max(self.mapped, end)
        helper.submit(job)

    def _huge_range(self, base: int, nbytes: int) -> tuple[int, int] | None:
        """The addresses of a binding's written bytes (the first `nbytes`) not yet put into
        2 MiB pages, whole 2 MiB pages only; None where there are none, or the arena is
        small. Marks them asked for."""
        if nbytes < MIN_HUGE:
            return None
        first = base + self.huge
        first += -first % HUGE_PAGE
        last = base + nbytes
        last -= last % HUGE_PAGE
        if last <= first:
            return None
        self.huge = last - base
        return first, last
