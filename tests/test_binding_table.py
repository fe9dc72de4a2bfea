"""A symbolic program's bindings (backends/llvm/binding_table.py): each new binding planned
once and kept, and the flat table's memory plan, GEMM descriptors and output shapes equal to
those made from the plan's expressions one by one."""
from __future__ import annotations

import numpy as np

import graphc as gc
from graphc import sizes
from graphc.backends.llvm import gemm
from graphc.specialize import bind_shapes

SYMBOLIC = {"sizes": "symbolic", "cache_dir": None}


def _mlp():
    rng = np.random.default_rng(0)
    x = gc.placeholder(("N", 96), name="x")
    y = gc.placeholder(("N",), "int64", name="y")
    params = [gc.parameter((rng.normal(size=s) * 0.1).astype(np.float32), name=f"p{i}")
              for i, s in enumerate([(96, 64), (64,), (64, 10), (10,)])]
    h = gc.relu(x @ params[0] + params[1])
    loss = gc.nn.cross_entropy(h @ params[2] + params[3], y)
    grads = gc.grad(loss, params)
    return gc.function([x, y], [loss] + grads, backend="llvm", backend_options=SYMBOLIC)


def _data(n: int):
    rng = np.random.default_rng(n)
    return rng.normal(size=(n, 96)).astype(np.float32), rng.integers(0, 10, n)


def test_a_new_binding_is_planned_once_and_reused(monkeypatch):
    f = _mlp()
    f(*_data(32))
    program = f._exe.symbolic
    recipe = program.recipe
    planned: list[tuple] = []
    bind = program._bind

    def counted(shapes: tuple):
        planned.append(shapes)
        return bind(shapes)
    monkeypatch.setattr(program, "_bind", counted)
    for n in (5, 5, 9, 5, 9, 5):
        f(*_data(n))
    assert planned == [((5, 96), (5,)), ((9, 96), (9,))]
    shapes = ((5, 96), (5,))
    assert program.binding(shapes) is program.binding(shapes)
    assert program.recipe is recipe  # the table is made once per program
    assert f.compile_times["bindings"] == 3


def _slow_vector(plan, k, values) -> list[int]:
    """A kernel's size values and GEMM descriptor from the plan's expressions, unmemoized."""
    recipe = plan.kernels[k]
    vector = [values[plan.symbols[s]] for s in recipe.symbols]
    g = recipe.gemm
    if g is not None and g.packed:
        vector += gemm._blocking(g.spec.bound(values), g.params, g.team, g.layouts,
                                 split_depth=False).desc
    return vector


def test_the_flat_table_plans_what_the_expressions_give():
    f = _mlp()
    f(*_data(32))
    program = f._exe.symbolic
    plan, table = program.plan, program.recipe
    assert any(g is not None for _, g in table.kernels)  # (some GEMM is packed)
    for n in (1, 3, 32, 77, 1000):
        values = bind_shapes(program.inputs, ((n, 96), (n,)))
        evaluated = table.evaluate(values)
        memory, expected = table.memory(evaluated), plan.memory(values)
        assert memory.offsets == expected.offsets
        assert memory.arena_bytes == expected.arena_bytes
        vectors = table.vectors(values, evaluated)
        assert vectors == [_slow_vector(plan, k, values) for k in range(len(plan.kernels))]
        places = [1000 + 64 * k for k in range(len(vectors))]
        extra = [at if vector else None for at, vector in zip(places, vectors)]
        assert table.descriptor(memory.offsets, places) == \
            plan.descriptor(expected.offsets, extra)
        assert table.output_shapes(evaluated) == \
            [(slot, tuple(sizes.evaluate(d, values) for d in shape), np.dtype(dtype))
             for slot, shape, dtype in plan.outputs]


def test_a_gemm_spec_rebuilt_from_its_flat_sizes_is_itself():
    n = sizes.named("N")
    (var,) = n.atoms()
    op = gemm._Operand
    spec = gemm._Spec("float32", (n,), n, 64, 3 * n, op(1, (n * 64,), 64, 1, 0),
                      op(2, (0,), 1, n, 5), op(3, (64,), 64, 1, n),
                      b_sub=(((n, 2), (3, 1)), ((64, 7),)))
    assert spec.rebuilt(spec.flat()) == spec
    bound = spec.bound({var: 6})
    assert bound.m == 6 and bound.k == 18 and bound.b.s1 == 6 and bound.c.offset == 6
    assert bound.b_sub == (((6, 2), (3, 1)), ((64, 7),))
