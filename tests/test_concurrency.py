"""Threads: one compiled function called from several Python threads at once gives the same
results as one at a time; training steps with parameter updates from several threads are
applied whole (each call holds its parameters' locks, in uid order: graphc/function.py) and
readers of `param.value`, other functions sharing the parameter and checkpoint saves never
see a parameter half-written. (Several processes compiling into one cache folder:
tests/test_llvm_cache.py::test_concurrent_processes_compiling_the_same_graph.)"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc as gc

pytestmark = pytest.mark.slow  # many threads calling compiled code

BACKENDS = ("numpy", "llvm")
THREADS = 4


def run_threads(target, count=THREADS):
    """Starts `count` threads on target(i) together; re-raises the first failure."""
    errors = []
    barrier = threading.Barrier(count)

    def body(i):
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("backend,options", [(b, None) for b in BACKENDS]
                         + [("llvm", {"sizes": "specialize"})])
def test_one_function_called_from_several_threads(backend, options, monkeypatch):
    monkeypatch.delenv("GRAPHC_SIZES", raising=False)  # (None: the default)
    x = gc.placeholder((None, 32), "float32", name="x")
    W = gc.parameter(np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32),
                     name="W_conc")
    h = gc.tanh(x @ W)
    f = gc.function([x], [h, gc.sum(h * h, axis=1), gc.grad(gc.sum(h * h), W)],
                    backend=backend, backend_options=options)
    rng = np.random.default_rng(1)
    # several batch sizes, so threads also compile new shapes (llvm) at the same time
    inputs = [rng.normal(size=(rows, 32)).astype(np.float32) for rows in (1, 7, 64, 300)]
    expected = [f(a) for a in inputs]
    fresh = gc.function([x], [h, gc.sum(h * h, axis=1), gc.grad(gc.sum(h * h), W)],
                        backend=backend, backend_options=options)  # nothing compiled yet

    def work(i):
        for rep in range(25):
            k = (i + rep) % len(inputs)
            for g in (f, fresh):
                got = g(inputs[k])
                for a, b in zip(got, expected[k]):
                    np.testing.assert_array_equal(a, b)

    run_threads(work)
    if backend == "llvm" and options:
        assert len(fresh._exe.compiled) == 4  # one module per shape, however many threads
    elif backend == "llvm":  # (the default) one program, a binding per shape, likewise
        assert fresh._exe.compiled == {} and len(fresh._exe.symbolic.bindings) == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_functions_without_parameters_in_threads(backend):
    a = gc.placeholder((None,), "float64", name="a")
    b = gc.placeholder((None,), "float64", name="b")
    f = gc.function([a, b], [a * b + 1, gc.sum(gc.exp(-a * a))], backend=backend)
    rng = np.random.default_rng(2)
    cases = [(rng.normal(size=n), rng.normal(size=n)) for n in (3, 1000, 50_000)]
    expected = [f(*c) for c in cases]

    def work(i):
        for rep in range(40):
            k = (i * 7 + rep) % len(cases)
            got = f(*cases[k])
            np.testing.assert_array_equal(got[0], expected[k][0])
            np.testing.assert_array_equal(got[1], expected[k][1])

    run_threads(work)


SIZE = 1_000_000  # large enough that a step takes a while and a torn read would be seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_steps_from_threads_are_applied_whole(backend):
    """Each step adds 1 to every element and returns the values it saw before its update.
    After N calls from T threads every element is exactly N; each call saw a uniform vector
    (all elements equal) and the values seen are 0, 1, ..., N-1, each once; meanwhile
    readers of p.value only ever see uniform vectors."""
    p = gc.parameter(np.zeros(SIZE, np.float32), name="p_whole")
    x = gc.placeholder((), "float32", name="x")
    step = gc.function([x], [gc.min(p), gc.max(p)], updates={p: p + x}, backend=backend)
    calls_per_thread = 30
    seen = []
    torn = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            v = p.value
            if v.min() != v.max():
                torn.append((v.min(), v.max()))

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()

    def work(i):
        for _ in range(calls_per_thread):
            lo, hi = step(1.0)
            seen.append((float(lo), float(hi)))

    try:
        run_threads(work)
    finally:
        done.set()
        for t in readers:
            t.join(timeout=60)
    total = THREADS * calls_per_thread
    final = p.value
    assert (final == total).all(), (final.min(), final.max())
    assert all(lo == hi for lo, hi in seen), [s for s in seen if s[0] != s[1]][:5]
    assert sorted(lo for lo, _ in seen) == list(range(total))
    assert not torn, torn[:5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_functions_sharing_parameters_from_threads(backend):
    """Two steps updating the same two parameters (taking their locks in the same order,
    whatever order the updates were written in): no deadlock, no lost update."""
    p = gc.parameter(np.zeros(SIZE // 4, np.float64), name="p_shared")
    q = gc.parameter(np.zeros(3, np.float64), name="q_shared")
    add1 = gc.function([], gc.sum(q), updates={p: p + 1.0, q: q + 1.0}, backend=backend)
    add2 = gc.function([], gc.sum(p), updates={q: q + 2.0, p: p + 2.0}, backend=backend)
    calls = 25

    def work(i):
        for _ in range(calls):
            (add1 if i % 2 else add2)()

    run_threads(work)
    expected = (THREADS // 2) * calls * 1 + (THREADS - THREADS // 2) * calls * 2
    assert (p.value == expected).all() and (q.value == expected).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_setting_values_while_steps_run(backend):
    """p.value = ... from one thread while another steps: each assignment and each step is
    whole, so the vector stays uniform throughout."""
    p = gc.parameter(np.zeros(SIZE, np.float32), name="p_set")
    step = gc.function([], gc.max(p) - gc.min(p), updates={p: p * 0.5 + 1.0},
                       backend=backend)

    def work(i):
        for k in range(30):
            if i == 0:
                p.value = np.full(SIZE, float(k), np.float32)
            else:
                assert step() == 0
                v = p.value
                assert v.min() == v.max()

    run_threads(work, count=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_checkpoint_saved_during_training_is_consistent(backend, tmp_path):
    """gc.train.save takes the parameters' locks: a save racing with steps stores a state
    between two steps, never a half-updated one, and the two parameters from one step."""
    p = gc.parameter(np.zeros(SIZE // 2, np.float32), name="p_ckpt")
    count = gc.parameter(np.zeros((), np.float32), name="count")
    step = gc.function([], count, updates={p: p + 1.0, count: count + 1.0}, backend=backend)

    def work(i):
        for k in range(20):
            if i == 0:
                path = tmp_path / f"c{k}.npz"
                gc.train.save(path, [p, count])
                arrays, _ = gc.train.load_arrays(path)
                saved = arrays["p_ckpt"]
                assert saved.min() == saved.max() == arrays["count"], (
                    saved.min(), saved.max(), arrays["count"])
            else:
                step()

    run_threads(work, count=3)
    assert (p.value == 40).all() and count.value == 40
