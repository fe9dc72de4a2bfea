"""Kernel listings print every kernel a schedule can hold, a symbolic program's too: its
accesses' offsets may be call-time sizes, whose sign is unknown (printing once compared
them with 0, which raises for such a size)."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc.schedule import ir
from graphc.schedule.printing import access_text


def test_an_access_prints_its_offset():
    assert access_text(ir.Access(3, (256, 1), 8)) == "b3<256,1>+8"
    assert access_text(ir.Access(3, (256, 1), -2)) == "b3<256,1>-2"
    assert access_text(ir.Access(3, (256, 1), 0)) == "b3<256,1>"


def test_a_symbolic_programs_listing_prints_call_time_offsets():
    # a stride-2 convolution's data gradient over a call-time batch: its gather reads the
    # cotangent at offsets that are call-time sizes (graphc.schedule.lower's
    # _windows_gathered, the cotangent's images the innermost axis)
    rng = np.random.default_rng(0)
    x = gc.placeholder((None, 1, 12, 12), "float32", name="x")
    w1 = gc.parameter(rng.normal(size=(16, 1, 3, 3)).astype(np.float32), name="w1")
    w2 = gc.parameter(rng.normal(size=(32, 16, 3, 3)).astype(np.float32), name="w2")
    y = gc.nn.conv2d(gc.relu(gc.nn.conv2d(x, w1, padding=1)), w2, stride=2, padding=1)
    loss = gc.sum(y * y)
    f = gc.function([x], [loss], updates={w1: w1 - 0.1 * gc.grad(loss, w1)},
                    backend="llvm", backend_options={"sizes": "symbolic", "cache_dir": None})
    f(np.ones((4, 1, 12, 12), np.float32))
    schedule = f._exe.symbolic._schedule
    listing = schedule.listing()
    assert listing.startswith(f"{len(schedule.kernels)} kernels")
    assert "+(" in listing and "?" in listing.split("+(", 1)[1].split(")", 1)[0]
