"""Large elementwise kernels run on a team of threads: same results as the reference, for
shapes whose outermost axis does not split evenly, and in a single-threaded configuration."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import parallel
from graphc.schedule import ir


@pytest.mark.parametrize("shape", [(1 << 17,), (257, 509), (3, 40001), (70001, 1)])
def test_large_elementwise_kernels_match_the_reference(shape):
    rng = np.random.default_rng(0)
    xv = rng.normal(size=shape).astype(np.float32)
    x = gc.placeholder(shape, name="x")
    outs = [gc.tanh(x) * 2.0 + gc.exp(-x * x), gc.sum(gc.sigmoid(x), axis=-1)]
    want = gc.function([x], outs, backend="numpy")(xv)
    f = gc.function([x], outs, backend="llvm")
    for got, ref in zip(f(xv), want):
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-5)


def test_threads_are_used_only_where_they_pay_off():
    small = ir.Elementwise((100,), (), ())
    assert parallel.threads_for(small) == 1
    big = ir.Elementwise((1 << 18,), (ir.Store(ir.Access(0, (1,)), ir.Const(0.0, np.float32),
                                               accumulate=True),), ())
    assert parallel.threads_for(big) == 1  # accumulating stores stay in order


def test_single_threaded_configuration_gives_the_same_results():
    code = ("import numpy as np, graphc as gc\n"
            "x = gc.placeholder((300, 401), name='x')\n"
            "f = gc.function([x], gc.tanh(x) + 1.0, backend='llvm')\n"
            "v = np.linspace(-3, 3, 300 * 401, dtype=np.float32).reshape(300, 401)\n"
            "print(float(np.abs(f(v) - (np.tanh(v) + 1)).max()))\n")
    for env in ({"GRAPHC_NUM_THREADS": "1"}, {"GRAPHC_NO_OPENMP": "1"}, {}):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=dict(os.environ, **env), timeout=300)
        assert result.returncode == 0, result.stderr
        assert float(result.stdout) < 1e-5
