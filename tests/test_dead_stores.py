"""Merged elementwise kernels do not store temporaries nobody reads (schedule/dead_stores.py)."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.schedule import ir, schedule_graph


def test_a_value_computed_again_by_its_merged_readers_is_not_stored():
    x = gc.placeholder((64,), "float64", name="x")
    y = x * x + 1.0  # read by two kernels: the lowering stores it for them
    outs = [gc.sin(y), gc.log(y)]
    schedule = schedule_graph(gc.function([x], outs, backend="numpy").graph)
    stores = [s for k in schedule.kernels if isinstance(k, ir.Elementwise) for s in k.stores]
    temps = {bid for bid, b in schedule.buffers.items() if b.role == "temp"}
    assert len(schedule.kernels) == 1 and len(stores) == 2
    assert not {s.access.buffer for s in stores} & temps
    arg = np.linspace(-2, 2, 64)
    for backend, options in (("llvm", {}), ("numpy", {"mode": "kernels"})):
        got = gc.function([x], outs, backend=backend, backend_options=options)(arg)
        np.testing.assert_allclose(got[0], np.sin(arg * arg + 1), rtol=1e-13)
        np.testing.assert_allclose(got[1], np.log(arg * arg + 1), rtol=1e-13)
