"""Sums and products of sizes are remembered by their operands: a remembered result is the
one the arithmetic gives afresh, and its value is right for any values of the symbols."""
from __future__ import annotations

import itertools

import numpy as np

from graphc import sizes
from graphc.sizes import Size, add, evaluate, fresh, mul, named


def _operands() -> list[sizes.Dim]:
    n, m, k = named("N"), named("M"), fresh()
    return [0, 1, -1, 3, 784, n, m, k, n * 784, n + m, 2 * n - m, n * m + 5, n * n, k * n - 7]


def _fresh(op, a, b):
    """The result with nothing remembered."""
    saved = dict(sizes._ARITHMETIC)
    sizes._ARITHMETIC.clear()
    try:
        return op(a, b)
    finally:
        sizes._ARITHMETIC.clear()
        sizes._ARITHMETIC.update(saved)


def test_remembered_sums_and_products_equal_fresh_ones_and_evaluate_right():
    rng = np.random.default_rng(0)
    ops = _operands()
    var_list = sorted({v for d in ops if isinstance(d, Size) for v in d.atoms()}, key=str)
    values = [{v: int(rng.integers(0, 50)) for v in var_list} for _ in range(3)]
    for (a, b), (op, py) in itertools.product(itertools.product(ops, ops),
                                              ((add, int.__add__), (mul, int.__mul__))):
        first, again = op(a, b), op(a, b)  # (the second from the memo)
        assert first == again == _fresh(op, a, b)
        assert type(first) is type(_fresh(op, a, b))
        for v in values:
            assert evaluate(first, v) == py(evaluate(a, v), evaluate(b, v))


def test_operators_use_the_same_results():
    n = named("N")
    assert n * 4 == mul(n, 4) and 4 * n == mul(n, 4) and n + 2 - 2 == n
    assert ("*", n, 4) in sizes._ARITHMETIC


def test_numpy_integers_are_not_remembered():
    """np.int64(2) equals 2 and hashes like it: remembered, a product of it could come
    back as the product of a plain 2 (or the other way round)."""
    n = named("N")
    want = 2 * n
    sizes._ARITHMETIC.clear()
    out = mul(n, np.int64(2))
    assert not sizes._ARITHMETIC and out == want


def test_the_memo_is_emptied_when_full(monkeypatch):
    monkeypatch.setattr(sizes, "_ARITHMETIC_LIMIT", 4)
    sizes._ARITHMETIC.clear()
    n = named("N")
    for k in range(10):
        assert mul(n, k + 2) == (k + 2) * n
        assert len(sizes._ARITHMETIC) <= 4
