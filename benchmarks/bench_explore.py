"""Times the explorer page (gc.explore) opening a flat 10,000-node gradient graph in headless
Chromium: the time from navigation start until the page is drawn and laid out, as it opens
(a graph that names no scopes folds into parts of 500 nodes) and with every node laid out
and drawn (#expand).

    python benchmarks/bench_explore.py [NODES] [RUNS]     (needs Debian's `chromium`)
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import graphc as gc
from graphc.node import toposort


def flat_gradient(nodes: int) -> list:
    """The loss and its gradient for a chain of elementwise ops with no scope names (nothing
    to fold by), about `nodes` nodes in all."""
    x = gc.placeholder((8,), dtype="float64", name="x")
    w = gc.parameter(np.full(8, 0.5), name="w")
    h = x
    for k in range(nodes * 2 // 13):  # each step adds about 6.5 nodes, forward and backward
        h = gc.tanh(h * w) if k % 2 else gc.sin(h + w)
    loss = gc.sum(h)
    return [loss, gc.grad(loss, w)]


def open_ms(page: Path, fragment: str = "") -> tuple[float, float, float]:
    """Navigation start to the page drawn and laid out (data-total-ms), the part of it in
    the page's script, and the part in layout and drawing of the graph, in ms."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("bench_explore needs chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                              f"--user-data-dir={profile}", "--window-size=1400,900",
                              "--dump-dom", page.resolve().as_uri() + fragment],
                             capture_output=True, text=True, timeout=300, check=True).stdout
    marks = [re.search(rf'data-{k}-ms="([\d.]+)"', dom) for k in ("total", "script", "layout")]
    errors = re.search(r'data-errors="(\d+)"', dom)
    if None in marks or errors is None or errors.group(1) != "0":
        raise SystemExit("the page did not finish without errors:\n" + dom[-2000:])
    total, script, layout = (float(m.group(1)) for m in marks if m is not None)
    return total, script, layout


def main(nodes: int = 10_000, runs: int = 3) -> None:
    graph = flat_gradient(nodes)
    n = len(toposort([t.node for t in graph]))
    with tempfile.TemporaryDirectory() as tmp:
        page = gc.explore(graph, Path(tmp) / "flat.html")
        size = page.stat().st_size
        print(f"{n} nodes, page {size / 1e6:.1f} MB")
        for what, fragment in (("as it opens (folded in parts)", ""),
                               ("every node laid out and drawn", "#expand")):
            times = sorted(open_ms(page, fragment) for _ in range(runs))
            total, script, layout = times[len(times) // 2]
            print(f"  {what}: drawn {total:.0f} ms after navigation start (median of {runs}: "
                  f"all {', '.join(f'{t[0]:.0f}' for t in times)}); of it the script "
                  f"{script:.0f} ms, the last layout and drawing {layout:.0f} ms")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
