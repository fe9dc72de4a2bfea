"""Where a symbolic program's first call at a new batch size goes (issue 13): for many new
sizes, the first call against the median of 5 warm calls at that size, and the first call's
parts: planning the binding (`_bind`), entering it (`_enter`), the native call (against a
warm one) and the rest (the call's Python path). Sizes go up and down around the batch
(batch - 37 + r, batch + 21 + r, 2 * batch + 3 - r for r < --rounds).

Before each first call the thread chooser (adaptive.py) is left settled: calls at the last
size until no trial of the other thread setting runs (it had run 5 calls at the batch only:
its first trial, started again at each new size, put first and warm calls on different
settings, one thread against the team, 1.0 against 0.64 ms for W1 on two idle cores, where
bench_sizes.py, settled by its 50 steps, timed both on the team). "team" counts the first and
the warm calls run on the team; "faults" is the median of the first calls' minor page faults
(the process's: the arena's new pages, arena.py).

On a machine shared with other jobs, run it on one thread and in CPU time of the calling
thread: GRAPHC_NUM_THREADS=1 python benchmarks/bench_first_call.py --only W1 --cpu
(the default clock is the wall clock). Sizes are "symbolic" (one program, no disk cache)."""
from __future__ import annotations

import argparse
import resource
import statistics
import time

from bench_sizes import _data, _make


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _settle(f, args: tuple, at_least: int) -> None:
    """Calls until the thread chooser runs no trial (at least `at_least` calls)."""
    chooser = f._exe.symbolic.chooser
    for n in range(1000):
        if n >= at_least and (chooser is None or not chooser.trial):
            return
        f(*args)


def measure(name: str, rounds: int, clock) -> dict:
    batch = 128 if name == "W1" else 64
    f = _make(name, {"sizes": "symbolic"})
    last = _data(name, batch, 0)
    f(*last)
    _settle(f, last, 30)
    program = f._exe.symbolic
    chooser = program.chooser

    def team() -> int:
        return int(chooser is not None and chooser.mode == 1)
    parts: dict[str, float] = {}

    def timed(obj, attr: str, label: str) -> None:
        real = getattr(obj, attr)

        def wrapper(*args, **kwargs):
            t0 = clock()
            try:
                return real(*args, **kwargs)
            finally:
                parts[label] = parts.get(label, 0.0) + clock() - t0
        setattr(obj, attr, wrapper)
    from graphc.backends.llvm import symbolic_runtime
    timed(program, "_bind", "bind")
    timed(program, "_enter", "enter")
    timed(symbolic_runtime, "call_entry", "call")
    rows = []
    teams = [0, 0]
    faults = []
    for r in range(rounds):
        for n in (batch - 37 + r, batch + 21 + r, 2 * batch + 3 - r):
            new = _data(name, n, n)
            _settle(f, last, 0)
            last = new
            parts.clear()
            teams[0] += team()
            m0 = _faults()
            t0 = clock()
            f(*new)
            first = clock() - t0
            faults.append(_faults() - m0)
            firsts = dict(parts)
            parts.clear()
            warms = []
            for _ in range(5):
                teams[1] += team()
                t0 = clock()
                f(*new)
                warms.append(clock() - t0)
            warm_call = parts.get("call", 0.0) / 5
            rows.append((first, statistics.median(warms), firsts, warm_call,
                         sum(warms) / 5 - warm_call))

    def ms(values) -> float:
        return statistics.median(values) * 1e3
    return {
        "sizes": len(rows),
        "first/warm": statistics.median(r[0] / r[1] for r in rows),
        "first ms": ms(r[0] for r in rows), "warm ms": ms(r[1] for r in rows),
        "bind ms": ms(r[2].get("bind", 0.0) for r in rows),
        "enter ms": ms(r[2].get("enter", 0.0) for r in rows),
        "call ms": ms(r[2].get("call", 0.0) for r in rows),
        "warm call ms": ms(r[3] for r in rows),
        "rest ms": ms(r[0] - sum(r[2].values()) for r in rows),
        "warm rest ms": ms(r[4] for r in rows),
        "team": f"{teams[0]}/{len(rows)} first, {teams[1]}/{5 * len(rows)} warm",
        "faults": statistics.median(faults)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="W1,W5")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--cpu", action="store_true", help="CPU time of the calling thread")
    a = ap.parse_args(argv)
    clock = time.thread_time if a.cpu else time.perf_counter
    for name in a.only.split(","):
        r = measure(name, a.rounds, clock)
        print(name, "  ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}"
                             for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
