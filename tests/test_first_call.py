"""A call at a new batch size after the first call (issue 13): it compiles nothing (fit's short
last batch, predict on one sample), and the code a compile writes for new bindings
(backends/llvm/int_code.py, placement_code.py) gives exactly what the recipes give."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import int_code, jit, processes
from graphc.backends.llvm.adaptive import ALONE, TEAM, ThreadChooser
from graphc.schedule.memory import place

SYMBOLIC = {"sizes": "symbolic", "cache_dir": None}


def _mlp(options: dict | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = gc.placeholder((None, 20), name="x")
    y = gc.placeholder((None,), "int64", name="y")
    params = [gc.parameter((rng.normal(size=s) * 0.3).astype(np.float32), name=f"p{i}")
              for i, s in enumerate([(20, 48), (48,), (48, 5), (5,)])]
    logits = gc.relu(x @ params[0] + params[1]) @ params[2] + params[3]
    loss = gc.nn.cross_entropy(logits, y)
    grads = gc.grad(loss, params)
    step = gc.function([x, y], loss, updates={p: p - 0.1 * g for p, g in zip(params, grads)},
                       backend="llvm", backend_options=options or SYMBOLIC)
    predict = gc.function([x], logits, backend="llvm", backend_options=options or SYMBOLIC)
    return step, predict, params


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 20)).astype(np.float32), rng.integers(0, 5, n)


@pytest.fixture
def compiles(monkeypatch) -> list[str]:
    """Every LLVM compile and every load of compiled code, by name."""
    seen: list[str] = []
    for module, name in ((processes, "compile_schedule"), (jit, "load_objects")):
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            seen.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)
    return seen


def test_fit_short_last_batch_and_predict_on_one_sample_compile_nothing(compiles):
    step, predict, params = _mlp()
    ref_step, ref_predict, ref_params = _mlp({"sizes": "specialize", "cache_dir": None})
    x, y = _data(70, 1)
    step(x[:16], y[:16])
    ref_step(x[:16], y[:16])
    predict(x[:16])
    compiled = len(compiles)
    assert compiled >= 2  # (the step's and the predict's first calls)
    # 70 rows in batches of 16: a short last batch of 6, every epoch
    gc.train.fit(step, (x, y), epochs=2, batch_size=16, progress=False, verbose=False)
    out = predict(x[:1])
    assert len(compiles) == compiled  # nothing compiled, nothing loaded
    assert step._exe.compiled == {} and predict._exe.compiled == {}
    # the same numbers as modules specialised to each size
    gc.train.fit(ref_step, (x, y), epochs=2, batch_size=16, progress=False, verbose=False)
    for p, q in zip(params, ref_params):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, ref_predict(x[:1]), rtol=1e-5, atol=1e-6)


def test_written_vectors_and_placements_are_the_recipes_at_every_size():
    step, _, _ = _mlp()
    step(*_data(16))
    program = step._exe.symbolic
    table = program.recipe
    placement = table._placement
    assert table._words is not None and placement.written  # (a compile writes them)
    written = 0
    for n in list(range(1, 400)) + [1000, 4097, 65536]:
        values = {var: n for var, _, _ in program.reads}
        numbers = [values[v] for v in table.symbols]
        evaluated = table.evaluate(values)
        assert table._table is not None and table._table(numbers) == evaluated
        assert table._words(numbers, evaluated).tolist() == \
            table.vectors_of(numbers, evaluated)
        nbytes = placement.nbytes(evaluated)
        assert table._nbytes(evaluated) == nbytes  # (written as one list display)
        want = place(list(zip(placement.bids, nbytes)), table.spans)
        assert placement.greedy(nbytes) == \
            ([want.offsets[b] for b in placement.bids], want.arena_bytes)
        for code in placement.written:
            placed = code(nbytes)
            assert placed is None or placed == placement.greedy(nbytes)
            written += placed is not None
        # the whole binding: its entry table as the plan's recipe makes it
        # (the kernels' vectors first, then the temporaries from `base`)
        planned = table.bind(values)
        memory = table.memory(evaluated)
        assert planned.arena_bytes == table.base + memory.arena_bytes
        assert table.base >= table.vector_bytes and table.base % 64 == 0
        places = [table._vector_at.get(k, 0) for k in range(len(table.kernels))]
        offsets = {b: table.base + o for b, o in memory.offsets.items()}
        assert planned.desc == table.descriptor(offsets, places)
        assert planned.partial  # (only the words its sizes change)
        assert table.full_words(planned).tolist() == table.vectors_of(numbers, evaluated)
    assert written > 300  # (the guards hold for most sizes)


def test_a_bigger_batch_within_the_room_keeps_the_arena():
    step, _, _ = _mlp()
    step(*_data(100))
    program = step._exe.symbolic
    arena = program.arena
    assert arena.nbytes > program.current.arena_bytes  # room to grow
    step(*_data(120))
    assert program.arena is arena


def test_int_code_writes_what_the_ints_compute():
    writer = int_code.Writer()
    n = writer.value("t[0]")
    recipe = [int_code.imin(n, 7), int_code.imax(-(-n // 3), 2), int_code.igcd(n, 12),
              int_code.as_int(int_code.both(int_code.eq(n % 4, 0), int_code.le(n, 64))),
              int_code.pick(int_code.ge(n, 10), n * 2 + 1, 5 - n)]
    fn = writer.function("f", "t", [], recipe)
    for v in range(-5, 130):
        ints = [min(v, 7), max(-(-v // 3), 2), np.gcd(v, 12), int(v % 4 == 0 and v <= 64),
                v * 2 + 1 if v >= 10 else 5 - v]
        assert fn([v]) == ints
    with pytest.raises(TypeError, match="decision"):
        if n > 3:  # (a branch on a size known only later must be spelled with pick)
            pass


def test_new_sizes_of_similar_work_keep_the_thread_choice():
    import ctypes
    flag = ctypes.c_int32(1)
    chooser = ThreadChooser([ctypes.addressof(flag)])
    chooser.mode, chooser.calls, chooser.next_check = TEAM, 100, 400
    chooser.rebind(1.3)  # (a short last batch: 1.3 times less work)
    assert chooser.mode == TEAM and chooser.next_check == 400
    chooser.rebind(4.0)  # far more work: the choice starts again
    assert chooser.next_check == chooser.calls and chooser.mode == TEAM
    chooser.mode = ALONE
    chooser.rebind()  # unknown: starts again
    assert chooser.next_check == chooser.calls


def test_new_sizes_during_a_trial_run_on_the_setting_it_challenged():
    import ctypes
    flag = ctypes.c_int32(1)
    chooser = ThreadChooser([ctypes.addressof(flag)])
    chooser.mode, chooser.calls, chooser.next_check = ALONE, 100, 400
    chooser.mode, chooser.trial = TEAM, chooser.WINDOW  # (a trial of the team began)
    chooser.rebind(1.2)
    assert chooser.mode == ALONE and chooser.trial == 0 and chooser.next_check == 400
    chooser.before_call()
    assert flag.value == ALONE  # the first call at the new sizes: one thread, as before
    chooser.mode, chooser.trial = ALONE, chooser.WINDOW  # (a trial of one thread)
    chooser.rebind(5.0)  # far more work: back to the team, and the choice starts again
    assert chooser.mode == TEAM and chooser.trial == 0 and chooser.next_check == chooser.calls


def test_a_program_too_large_to_write_down_binds_with_the_recipes(monkeypatch):
    from graphc.backends.llvm import binding_table, placement_code
    written, _, written_params = _mlp(seed=3)
    plain, _, plain_params = _mlp(seed=3)
    written(*_data(16, 16))  # (compiled, and its code written, before the limits)
    monkeypatch.setattr(binding_table, "MAX_WRITTEN_VECTORS", 0)
    monkeypatch.setattr(placement_code, "MAX_GUARD_WORK", 0)
    plain(*_data(16, 16))
    for n in (5, 40, 1, 16, 33):
        np.testing.assert_allclose(plain(*_data(n, n)), written(*_data(n, n)), rtol=1e-6)
    table = plain._exe.symbolic.recipe
    assert table._words is None and table._placement.written == []
    assert written._exe.symbolic.recipe._words is not None
    for p, q in zip(plain_params, written_params):
        np.testing.assert_array_equal(p.value, q.value)


def _resident(array: np.ndarray) -> list[bool]:
    """Which of `array`'s pages are mapped (mincore; `array` page-aligned)."""
    import ctypes
    import mmap
    pages = -(-array.nbytes // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(array.ctypes.data, array.nbytes, vec) == 0, ctypes.get_errno()
    return [bool(v & 1) for v in vec]


def test_the_arena_grows_in_place_and_maps_its_room_ahead(monkeypatch):
    import mmap
    from graphc.backends.llvm import arena as arena_module
    monkeypatch.setattr(arena_module, "ROOM_AHEAD", 64 * mmap.PAGESIZE)
    monkeypatch.setattr(arena_module, "MIN_AHEAD", mmap.PAGESIZE)
    arena = arena_module.Arena()
    nbytes = 100 * mmap.PAGESIZE
    assert arena.fit(nbytes) and arena.array.nbytes == nbytes + nbytes // 2
    memory = arena.memory
    arena.array[:nbytes] = 7  # (a call writes its binding's pages)
    assert not any(_resident(arena.array[nbytes:]))  # the room: not mapped yet
    arena.ahead(nbytes)
    helper = arena_module._the_helper()
    if helper is None:
        pytest.skip("no MADV_POPULATE_WRITE here (Linux before 5.14)")
    assert arena._job is not None and arena._job.done.wait(10)
    assert all(_resident(arena.array))  # (the room is 50 pages: under ROOM_AHEAD)
    assert not arena.fit(nbytes // 3)  # a smaller binding: the same memory
    # a larger one grows the same mapping: what was written (mapped) is kept
    assert arena.fit(3 * nbytes)
    assert arena.memory is memory and arena.array.nbytes == 3 * nbytes + 3 * nbytes // 2
    assert (arena.array[:nbytes] == 7).all()
    assert all(_resident(arena.array[:nbytes + nbytes // 2]))
    arena.array[:3 * nbytes] = 8  # (its call)
    arena.ahead(3 * nbytes)
    assert arena._job.done.wait(10)
    resident = _resident(arena.array)
    assert all(resident[:300 + 64]) and not any(resident[300 + 64:])  # ROOM_AHEAD's pages
    # a view held elsewhere stops mremap: a new mapping instead
    held = arena.array
    assert arena.fit(5 * nbytes) and arena.memory is not memory
    assert (held[:nbytes] == 8).all()


def test_a_larger_batch_after_the_room_gives_what_modules_give():
    step, predict, params = _mlp()
    ref_step, ref_predict, ref_params = _mlp({"sizes": "specialize", "cache_dir": None})
    program = None
    for n in (16, 20, 300, 9, 2000, 31):  # (20: in the room; 300, 2000: the arena grows)
        x, y = _data(n, n)
        np.testing.assert_allclose(step(x, y), ref_step(x, y), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(predict(x), ref_predict(x), rtol=1e-5, atol=1e-6)
        program = program or step._exe.symbolic
        assert program.arena.nbytes >= program.current.arena_bytes
    for p, q in zip(params, ref_params):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-4, atol=1e-5)


def test_size_expressions_written_as_code_compute_what_they_evaluate_to():
    from graphc import sizes
    from graphc.backends.llvm.binding_table import _size_code
    n, m = sizes.named("N"), sizes.named("M")
    (vn,), (vm,) = n.atoms(), m.atoms()
    number = {vn: 0, vm: 1}
    exprs = [3 * sizes.floordiv(n - 1, 2) + 1,  # (`*` and `//` bind alike: parenthesized)
             sizes.floordiv(3 * n, 2) * m - 7, sizes.minimum(n, m) * 4,
             sizes.maximum(n - 3, m) - n * n * m, sizes.floordiv(n + m, 3) * sizes.floordiv(m, 5)]
    for d in exprs:
        fn = int_code.function_of("size", "n", [f"return {_size_code(d, number)}"])
        for a in range(1, 40):
            for b in (1, 2, 7, 30):
                assert fn([a, b]) == sizes.evaluate(d, {vn: a, vm: b}), (d, a, b)
    with pytest.raises(TypeError):
        _size_code(sizes.isqrt(n), number)  # (not written: the recipe evaluates it)


def test_a_cnns_written_size_table_is_its_expressions():
    rng = np.random.default_rng(0)
    x = gc.placeholder((None, 1, 12, 12), name="x")
    w = gc.parameter((rng.normal(size=(4, 1, 3, 3)) * 0.3).astype(np.float32), name="w")
    y = gc.nn.max_pool2d(gc.relu(gc.nn.conv2d(x, w, stride=2, padding=1)), 2)
    loss = gc.sum(y * y)
    f = gc.function([x], [loss, gc.grad(loss, [w])[0]], backend="llvm",
                    backend_options=SYMBOLIC)
    f(rng.normal(size=(2, 1, 12, 12)).astype(np.float32))
    table = f._exe.symbolic.recipe
    assert table._table is not None and any(not d.is_var() for d in table.exprs
                                            if not isinstance(d, int))
    for n in (1, 3, 5, 64, 1000):
        values = {var: n for var, _, _ in f._exe.symbolic.reads}
        numbers = [values[v] for v in table.symbols]
        assert table._table(numbers) == table.evaluate(values)
