"""Where a symbolic program's first call at a new batch size goes (issue 13): for many new
sizes, the first call against the median of 5 warm calls at that size, and the first call's
parts: planning the binding (`_bind`), entering it (`_enter`), the native call (against a
warm one) and the rest (the call's Python path). Sizes go up and down around the batch
(batch - 37 + r, batch + 21 + r, 2 * batch + 3 - r for r < --rounds).

On a machine shared with other jobs, run it on one thread and in CPU time of the calling
thread: GRAPHC_NUM_THREADS=1 python benchmarks/bench_first_call.py --only W1 --cpu
(the default clock is the wall clock). Sizes are "symbolic" (one program, no disk cache)."""
from __future__ import annotations

import argparse
import statistics
import time

from bench_sizes import _data, _make


def measure(name: str, rounds: int, clock) -> dict:
    batch = 128 if name == "W1" else 64
    f = _make(name, {"sizes": "symbolic"})
    for _ in range(5):
        f(*_data(name, batch, 0))
    program = f._exe.symbolic
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
    for r in range(rounds):
        for n in (batch - 37 + r, batch + 21 + r, 2 * batch + 3 - r):
            new = _data(name, n, n)
            parts.clear()
            t0 = clock()
            f(*new)
            first = clock() - t0
            firsts = dict(parts)
            parts.clear()
            warms = []
            for _ in range(5):
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
        "warm rest ms": ms(r[4] for r in rows)}


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
