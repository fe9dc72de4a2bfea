"""The thread setting of a program's first calls (adaptive.first_setting): the team where
the compile just before found the cores free (its processes ran nearly all their time), one
thread where it did not or nothing was compiled; the chooser's trials decide from there."""
from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import adaptive
from graphc.backends.llvm.adaptive import ALONE, TEAM, ThreadChooser, first_setting
from tanh_chain import tanh_chain
from test_llvm_parallel import _drive  # (calls as runtime.call_entry makes them)


def test_the_first_setting_follows_the_compiles_share_of_the_cores():
    assert first_setting({}) == ALONE  # loaded from the cache: nothing was seen
    assert first_setting({"compile cpu share": 0.95}) == TEAM
    assert first_setting({"compile cpu share": 0.5}) == ALONE  # another process was busy


def test_a_chooser_started_on_the_team_keeps_it_where_it_is_faster():
    flag = ctypes.c_int32(0)
    chooser = ThreadChooser([ctypes.addressof(flag)], TEAM)
    seen = _drive(chooser, flag, team_ms=1.0, alone_ms=1.7, calls=200)
    assert seen[:3] == [TEAM] * 3  # the first calls on the team
    assert seen.count(ALONE) <= ThreadChooser.WINDOW  # one trial of one thread, lost
    assert seen[-10:] == [TEAM] * 10


def test_a_chooser_started_on_the_team_leaves_it_on_a_busy_machine():
    flag = ctypes.c_int32(0)
    chooser = ThreadChooser([ctypes.addressof(flag)], TEAM)
    seen = _drive(chooser, flag, team_ms=40.0, alone_ms=1.7, calls=300)
    assert seen[0] == TEAM
    assert seen.count(TEAM) <= 3 * (ThreadChooser.WINDOW + 2)
    assert seen[-10:] == [ALONE] * 10


def _wide_step(folder) -> gc.Function:
    """A step large enough for its GEMMs to have team code and for a compile in parts."""
    x, outs, _ = tanh_chain((256, 264, 248, 272, 240, 256), 256, 0.1, 5)
    return gc.function([x], outs, backend_options={"cache_dir": str(folder)})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux")
@pytest.mark.parametrize("threshold, setting", [(0.0, TEAM), (10.0, ALONE)])
def test_a_compile_in_processes_sets_the_first_calls(monkeypatch, tmp_path, threshold,
                                                       setting):
    monkeypatch.setenv("GRAPHC_COMPILE_JOBS", "2")
    monkeypatch.setattr(adaptive, "FREE_CORES_SHARE", threshold)
    step = _wide_step(tmp_path)
    xv = np.random.default_rng(6).normal(size=(256, 256)).astype(np.float32)
    step(xv)
    times = step.compile_times
    assert times["parts"] == 2
    assert 0.0 < times["compile cpu share"] <= 2.0  # (CPU over wall of each process)
    chooser = step._exe.last.chooser
    if chooser is None:
        pytest.fail("the step has no thread chooser: no kernel with team code")
    assert chooser.mode == setting  # (the first call is not timed: its setting stays)
    # loaded from the cache, nothing compiled: one thread first, whatever the threshold
    again = _wide_step(tmp_path)
    again(xv)
    assert "compile cpu share" not in again.compile_times
    assert again._exe.last.chooser.mode == ALONE
