"""Transposing elementwise kernels walked in tiles (graphc/schedule/tiles.py): the same
values as numpy on both backends, tiled only where the sizes are whole tiles."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.schedule.tiles import TILE, tile_transposed
from graphc.schedule import ir


def _update(rows: int, cols: int, backend: str):
    rng = np.random.default_rng(rows + cols)
    g = gc.placeholder((cols, rows), "float32", name="g")
    start = rng.normal(size=(rows, cols)).astype(np.float32)
    p = gc.parameter(start.copy(), name="p")
    f = gc.function([g], gc.sum(g), updates={p: p - 0.1 * gc.transpose(g) * gc.exp(p)},
                    backend=backend)
    gv = rng.normal(size=(cols, rows)).astype(np.float32)
    f(gv)
    want = start - 0.1 * gv.T * np.exp(start)
    np.testing.assert_allclose(p.value, want, rtol=1e-5, atol=1e-6)
    return [k for k in f.schedule().kernels if k.kind == "elementwise"]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_transposed_update_is_tiled_and_right(backend):
    shapes = [k.shape for k in _update(64, 48, backend)]
    assert (64 // TILE, 48 // TILE, TILE, TILE) in shapes


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("rows, cols", [(40, 48), (16, 64), (7, 5)])
def test_sizes_not_in_whole_tiles_stay_untiled(backend, rows, cols):
    shapes = [k.shape for k in _update(rows, cols, backend)]
    assert (rows, cols) in shapes and not any(len(s) == 4 for s in shapes)


def test_a_kernel_that_reads_in_its_own_order_is_left_alone():
    acc = ir.Access(0, (64, 1), 0)
    k = ir.Elementwise((64, 64), (ir.Store(ir.Access(1, (64, 1), 0),
                                           ir.Load(acc, np.dtype("float32"))),), ())
    assert tile_transposed(k) is k
