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
from graphc.backends.llvm.adaptive import ThreadChooser
from graphc.schedule import ir
from tanh_chain import tanh_chain

pytestmark = pytest.mark.slow  # large kernels on thread teams


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



@pytest.mark.parametrize("dtype,batch", [("float32", 1001), ("int32", 1001),
                                         ("float32", None)])
def test_reductions_over_middle_axes_split_among_threads_match_numpy(dtype, batch):
    # Axes 1 and 2 reduced, the first and last kept: each thread owns a part of axis 0
    # (1001 rows do not split evenly; None: a call-time size); a max pool's first-max
    # index has this form.
    rng = np.random.default_rng(1)
    v = (rng.normal(size=(1001, 3, 5, 23)) * 100).astype(dtype)
    x = gc.placeholder((batch, 3, 5, 23), dtype, name="x")
    f = gc.function([x], [gc.min(x, axis=(1, 2)), gc.max(x, axis=(1, 2)),
                          gc.sum(x, axis=(1, 2))], backend="llvm")
    got_min, got_max, got_sum = f(v)
    assert "GOMP_parallel" in f.source and "_part" in f.source  # the team's path
    np.testing.assert_array_equal(got_min, v.min(axis=(1, 2)))
    np.testing.assert_array_equal(got_max, v.max(axis=(1, 2)))
    np.testing.assert_allclose(got_sum, v.sum(axis=(1, 2)), rtol=1e-5, atol=1e-3)

def test_threads_are_used_only_where_they_pay_off():
    small = ir.Elementwise((100,), (), ())
    assert parallel.threads_for(small) == 1
    big = ir.Elementwise((1 << 18,), (ir.Store(ir.Access(0, (0,)), ir.Const(0.0, np.float32),
                                               accumulate="atomic"),), ())
    assert parallel.threads_for(big) == 1  # accumulating stores that collide stay in order


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


# ---- the adaptive choice between a thread team and one thread -----------------------------

def _chooser():
    import ctypes
    flag = ctypes.c_int32(1)
    return ThreadChooser([ctypes.addressof(flag)]), flag


def _drive(chooser, flag, team_ms: float, alone_ms: float, calls: int,
           timed: list | None = None) -> list[int]:
    """Calls whose time depends on the flag the chooser set, as runtime.call_entry makes
    them (a quiet call neither sets nor times); returns the flags seen."""
    return _drive_times(chooser, flag, [(team_ms, alone_ms)] * calls, timed)


def _drive_times(chooser, flag, times: list[tuple[float, float]],
                 timed: list | None = None) -> list[int]:
    """Like _drive, each call's (team, alone) ms from `times` in turn."""
    seen = []
    for team_ms, alone_ms in times:
        if chooser.quiet:
            chooser.quiet -= 1
            seen.append(flag.value)
            continue
        chooser.before_call()
        seen.append(flag.value)
        chooser.after_call((team_ms if flag.value else alone_ms) / 1e3)
        if timed is not None:
            timed.append(flag.value)
    return seen


def test_the_chooser_keeps_the_team_where_it_is_faster():
    chooser, flag = _chooser()
    seen = _drive(chooser, flag, team_ms=1.0, alone_ms=1.7, calls=200)
    assert seen[:7] == [0] * 7 and seen[7:13] == [1] * 6  # one thread first, a team trial...
    assert set(seen[13:]) == {1}  # ...then the team, until the next recheck
    later = _drive(chooser, flag, team_ms=1.0, alone_ms=1.7, calls=3000)
    assert later.count(0) <= 3 * ThreadChooser.WINDOW  # rechecks grow rarer


def test_the_chooser_stays_alone_on_a_busy_machine():
    chooser, flag = _chooser()
    seen = _drive(chooser, flag, team_ms=40.0, alone_ms=1.7, calls=300)
    assert seen.count(1) <= 2 * (ThreadChooser.WINDOW + 1)  # a trial or two of the team
    assert seen[-10:] == [0] * 10


def test_a_chooser_alone_times_only_the_calls_before_a_check():
    chooser, flag = _chooser()
    timed = []
    seen = _drive(chooser, flag, team_ms=40.0, alone_ms=1.7, calls=3000, timed=timed)
    assert len(timed) < 300  # one thread wins: only the windows around rechecks are timed
    assert seen.count(1) <= 4 * (ThreadChooser.WINDOW + 1) and seen[-10:] == [0] * 10


def test_a_call_too_short_for_a_team_never_tries_it():
    chooser, flag = _chooser()
    seen = _drive(chooser, flag, team_ms=0.004, alone_ms=0.01, calls=5000)
    assert set(seen) == {0}  # 10 us alone: the team is not woken, not even for a trial
    chooser.rebind()  # (new sizes: the calls take longer now, and the team wins)
    seen = _drive(chooser, flag, team_ms=1.0, alone_ms=1.7, calls=40)
    assert seen[-10:] == [1] * 10


def test_the_chooser_goes_alone_when_the_team_stalls():
    chooser, flag = _chooser()
    _drive(chooser, flag, team_ms=1.0, alone_ms=1.7, calls=100)
    assert flag.value == 1
    # other processes take a core: team calls now wait for a descheduled thread
    seen = _drive(chooser, flag, team_ms=40.0, alone_ms=1.7, calls=30)
    assert seen[-10:] == [0] * 10
    # and back to the team once the machine is idle again (at a recheck)
    seen = _drive(chooser, flag, team_ms=1.0, alone_ms=1.7, calls=600)
    assert seen[-10:] == [1] * 10


def _runs_of_team(seen: list[int]) -> list[int]:
    runs, n = [], 0
    for flag in seen + [0]:
        if flag:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_a_long_calls_disturbed_first_trial_is_looked_at_again_soon():
    """25 ms steps: a first team trial slowed by another process picks one thread; the
    team is tried again within FIRST_ALONE_RECHECK calls, not after 256 (6 s)."""
    chooser, flag = _chooser()
    _drive(chooser, flag, team_ms=200.0, alone_ms=30.0, calls=13)
    assert flag.value == 0
    seen = _drive(chooser, flag, team_ms=18.0, alone_ms=30.0, calls=40)
    assert seen[-10:] == [1] * 10


def test_a_short_calls_disturbed_first_trial_is_looked_at_again_soon():
    """1 ms steps (W5): a first team trial that another process slowed picks one thread;
    the team is tried again within FIRST_ALONE_RECHECK calls (it was 512)."""
    chooser, flag = _chooser()
    _drive(chooser, flag, team_ms=10.0, alone_ms=1.0, calls=13)
    assert flag.value == 0
    seen = _drive(chooser, flag, team_ms=0.6, alone_ms=1.0, calls=4 * ThreadChooser.WINDOW + 20)
    assert seen[-10:] == [1] * 10


def test_a_stalled_team_trial_ends_at_its_first_slow_call():
    chooser, flag = _chooser()
    seen = _drive(chooser, flag, team_ms=400.0, alone_ms=30.0, calls=300)
    runs = _runs_of_team(seen)
    assert len(runs) >= 2  # (long calls are rechecked often)...
    assert max(runs) <= 2  # ...but a trial costs one slow call (two with the team's start)
    assert seen[-10:] == [0] * 10


def test_a_trial_stalled_once_after_faster_calls_is_tried_again_after_a_window():
    """W5 after a compile: the team's second trial call beats one thread, the third is
    stalled by a passing disturbance (another library's spinning threads); the team is
    tried again five calls later, not after FIRST_ALONE_RECHECK (20), and kept."""
    chooser, flag = _chooser()
    seen = _drive_times(chooser, flag, [(0.8, 1.3)] * 9 + [(12.0, 1.3)] + [(0.8, 1.3)] * 40)
    assert seen[7:10] == [1, 1, 1] and seen[10:15] == [0] * 5
    assert seen[15:] == [1] * 35
    # stalled again in the retry: no second quick retry, one thread until the recheck
    chooser, flag = _chooser()
    times = [(0.8, 1.3)] * 9 + [(12.0, 1.3)] + [(0.8, 1.3)] * 6 + [(12.0, 1.3)]
    seen = _drive_times(chooser, flag, times + [(0.8, 1.3)] * 15)
    assert seen[-15:] == [0] * 15


def test_a_busy_machines_stalled_trial_gets_no_quick_retry():
    # every team call slow: nothing suggests a passing disturbance
    chooser, flag = _chooser()
    seen = _drive(chooser, flag, team_ms=40.0, alone_ms=1.7, calls=30)
    assert seen[7:9] == [1, 1]  # the trial: the team's start, then a stalled call
    recheck = ThreadChooser.FIRST_ALONE_RECHECK
    assert seen[9:9 + recheck] == [0] * recheck  # not tried again after WINDOW calls


def test_adaptive_threads_can_be_switched_off(monkeypatch, tmp_path):
    a = gc.placeholder((512, 512), name="a")
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    f = gc.function([a], a @ a, backend_options={"cache_dir": str(tmp_path)})
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "1")
    g = gc.function([a], a @ a, backend_options={"cache_dir": str(tmp_path)})
    assert f._exe.last.chooser is None
    if g._exe.last.layout.team_flags:  # a team only where libgomp and 2+ cores are there
        assert g._exe.last.chooser is not None


# ---- large modules compile as parts, in processes of their own, linked in one engine ------

# Layers of different widths: identical layers would share their kernels' code, leaving
# too little to compile for a second process.
WIDTHS = (48, 40, 56, 36, 60, 44, 52, 48)


def _deep_mlp(backend: str, folder):
    x, outs, rng = tanh_chain(WIDTHS, 32, 0.2, 3)
    step = gc.function([x], outs, backend=backend,
                       backend_options={"cache_dir": str(folder)} if backend == "llvm" else None)
    return step, rng.normal(size=(32, 48)).astype(np.float32)


def _agrees_with_numpy(step, x, folder) -> None:
    reference, _ = _deep_mlp("numpy", folder)
    for got, want in zip(step(x), reference(x)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)


def test_a_large_module_compiled_in_two_processes_links_and_agrees(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step, x = _deep_mlp("llvm", tmp_path)
    assert step._exe.last.times.extra["parts"] == 2
    modules = len(step._exe.last.ir_texts)
    assert f"; ---- module 1 of {modules} ----" in step.source
    assert f"module 1 of {modules}" in step.asm
    _agrees_with_numpy(step, x, tmp_path)
    again, _ = _deep_mlp("llvm", tmp_path)  # from the cache: every module's object
    assert again._exe.last.cached
    assert f"; ---- module 1 of {modules} ----" in again.source  # rendered again
    _agrees_with_numpy(again, x, tmp_path)


def test_the_arena_is_touched_while_the_other_process_compiles(monkeypatch, tmp_path):
    """A thread of the parent writes the arena's pages while a child compiles; the program
    runs in that arena (its first call then finds the pages mapped)."""
    from graphc.backends.llvm import runtime
    touched = []
    real = runtime._touched
    monkeypatch.setattr(runtime, "_touched", lambda memory, busy: touched.append(
        real(memory, busy)) or touched[-1])
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step, x = _deep_mlp("llvm", tmp_path)
    exe = step._exe.last
    assert len(touched) == 1 and touched[0].nbytes == exe.layout.arena_bytes > 0
    assert exe.arena is touched[0]
    _agrees_with_numpy(step, x, tmp_path)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "1")  # one process: no one to wait for
    _deep_mlp("llvm", tmp_path / "one")[0]
    assert len(touched) == 1


def test_the_arena_is_touched_beside_the_children_and_the_thread_joined(monkeypatch,
                                                                        tmp_path):
    """The touching thread starts once the children are forked; the parent, whose children
    build every module, builds none itself (its IR's cycles, collected after the compile,
    were on the first call's path); the thread has ended when the compile returns."""
    import threading
    from graphc.backends.llvm import processes, runtime
    seen = []
    real_pull, real_start = processes._pull, runtime._ArenaToucher.start
    monkeypatch.setattr(processes, "_pull", lambda *a: seen.append("pull") or real_pull(*a))
    monkeypatch.setattr(runtime._ArenaToucher, "start",
                        lambda self: seen.append("touch") or real_start(self))
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step, x = _deep_mlp("llvm", tmp_path)
    assert step._exe.last.times.extra["parts"] == 2
    assert seen == ["touch"]  # (the children's calls of _pull are in their own processes)
    assert not any(t.name == "graphc-arena-touch" for t in threading.enumerate())
    _agrees_with_numpy(step, x, tmp_path)


def test_a_child_not_forked_leaves_its_share_to_the_parent(monkeypatch, tmp_path):
    """One of the two forks refused: the parent takes modules from the queue beside the
    child that was made, and the program is whole."""
    from graphc.backends.llvm import processes
    parent, real_fork, forks, pulls = os.getpid(), os.fork, [], []
    real_pull = processes._pull

    def second_refused():
        forks.append(1)
        if len(forks) == 2:
            raise OSError("fork refused (as when out of processes)")
        return real_fork()

    def pull(*args):
        if os.getpid() == parent:
            pulls.append(1)
        return real_pull(*args)

    monkeypatch.setattr(processes.os, "fork", second_refused)
    monkeypatch.setattr(processes, "_pull", pull)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step, x = _deep_mlp("llvm", tmp_path)
    assert len(forks) == 2 and pulls == [1]
    _agrees_with_numpy(step, x, tmp_path)


def test_touching_the_arena_stops_once_the_other_processes_are_done():
    """A 1.5 GB arena (W7 at T=4096) is not touched whole while compiling: only while the
    other processes still work; the first call maps the rest."""
    from graphc.backends.llvm import runtime
    memory = np.ones(5 * runtime._TOUCH_CHUNK, np.uint8)
    answers = iter([True, True])
    runtime._touched(memory, lambda: next(answers, False))
    starts = memory[::runtime._TOUCH_CHUNK]
    assert list(starts) == [0, 0, 1, 1, 1]


def test_one_process_compiles_every_module(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "1")
    step, x = _deep_mlp("llvm", tmp_path)
    assert step._exe.last.times.extra["parts"] == 1
    _agrees_with_numpy(step, x, tmp_path)


def test_a_child_that_dies_is_replaced_by_the_parent(monkeypatch, tmp_path):
    from graphc.backends.llvm import processes
    parent = os.getpid()
    build = processes._build_units

    def dying(*args):
        if os.getpid() != parent:
            os._exit(3)  # as if the child were killed
        return build(*args)

    monkeypatch.setattr(processes, "_build_units", dying)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step, x = _deep_mlp("llvm", tmp_path)
    assert step._exe.last.times.extra["parts"] == 2
    _agrees_with_numpy(step, x, tmp_path)


def test_a_child_whose_answer_is_cut_short_is_replaced(monkeypatch, tmp_path):
    from graphc.backends.llvm import processes
    parent = os.getpid()
    build = processes._build_units

    def truncated(*args):
        built = build(*args)
        if os.getpid() != parent:  # not whole object files
            return [(text, obj[: len(obj) // 2], *rest) for text, obj, *rest in built]
        return built

    monkeypatch.setattr(processes, "_build_units", truncated)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step, x = _deep_mlp("llvm", tmp_path)
    _agrees_with_numpy(step, x, tmp_path)


def test_fork_refused_compiles_every_part_here(monkeypatch, tmp_path):
    from graphc.backends.llvm import processes

    def refuse():
        raise OSError("fork refused (as when out of processes)")

    monkeypatch.setattr(processes.os, "fork", refuse)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    step, x = _deep_mlp("llvm", tmp_path)
    _agrees_with_numpy(step, x, tmp_path)


def test_compile_jobs_setting_is_checked(monkeypatch):
    from graphc.backends.llvm import processes
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "two")
    with pytest.raises(ValueError, match="GRAPHC_COMPILE_JOBS"):
        processes.compile_jobs()
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "0")
    assert processes.compile_jobs() == 1


def test_an_interrupted_compile_kills_and_reaps_its_children(monkeypatch, tmp_path):
    import time
    from graphc.backends.llvm import processes
    parent, forked = os.getpid(), []
    real_fork = processes.os.fork

    def fork():
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    def build(*args):
        if os.getpid() != parent:
            time.sleep(60)  # a child still at work when the parent gives up
        raise KeyboardInterrupt  # the parent interrupted while it builds part 0

    monkeypatch.setattr(processes.os, "fork", fork)
    monkeypatch.setattr(processes, "_build_units", build)
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    with pytest.raises(KeyboardInterrupt):
        _deep_mlp("llvm", tmp_path)[0](np.zeros((32, 48), np.float32))
    assert forked
    for pid in forked:  # killed and reaped: no such process any more
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
