"""benchmarks/gemm_rate.py's FLOP counts (what bench_resnet divides W6's step time into): a
convolution step's matrix products counted from the graph equal the definition's count,
and the compiled GEMM kernels execute the data gradient over the input's own size (a
padded convolution's gradient computes no border rows it would drop)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import LLVM_POLICY
from graphc.schedule import schedule_graph

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from gemm_rate import graph_matmul_flops, schedule_gemm_flops  # noqa: E402


def _conv_step(n: int, c: int, o: int, hw: int, k: int, padding: int):
    x = gc.placeholder((n, c, hw, hw), "float32", name="x")
    w = gc.parameter(np.ones((o, c, k, k), np.float32), name="w")
    loss = gc.sum(gc.tanh(gc.nn.conv2d(gc.relu(x), w, padding=padding)))
    gx, gw = gc.grad(loss, [x, w])
    return [gx, gw], gc.function([x], [loss, gx], updates={w: w - 0.1 * gw},
                                 backend="numpy")


@pytest.mark.parametrize("padding", [0, 1])
def test_a_conv_step_counts_three_products_of_the_definitions_size(padding):
    n, c, o, hw, k = 4, 8, 6, 16, 3
    grads, f = _conv_step(n, c, o, hw, k, padding)
    out = hw + 2 * padding - k + 1
    one = 2 * n * out * out * o * c * k * k  # forward; each gradient's product the same
    assert graph_matmul_flops(grads) == 3 * one
    executed = schedule_gemm_flops(schedule_graph(f.graph, policy=LLVM_POLICY))
    # the data gradient as a convolution makes each of the input's hw*hw values (the zeros
    # around dY multiplied too), no more: same-size padding adds nothing
    assert executed == 2 * one + one * hw * hw // (out * out)
    assert (executed == 3 * one) == (padding == 1)


def test_symbolic_sizes_are_refused_by_name():
    x = gc.placeholder((None, 3), "float32", name="x")
    w = gc.placeholder((3, 2), "float32", name="w")
    with pytest.raises(ValueError, match="symbolic"):
        graph_matmul_flops([x @ w])
