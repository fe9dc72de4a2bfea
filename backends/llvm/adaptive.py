"""Choosing, from measured call times, whether a module's parallel kernels use their team of
threads. On an idle machine the team wins; while other processes keep the cores busy, a
team member that the OS does not schedule stalls every join (steps 5-50x slower, measured
on a loaded 2-core machine), and one thread wins. The chooser times each call, tries the
other setting now and then (and at once when a call takes far longer than usual), and keeps
whichever has the lower median. GRAPHC_ADAPTIVE_THREADS=0 switches it off (always team)."""
from __future__ import annotations

import ctypes
import os
import statistics
from collections import deque

TEAM, ALONE = 1, 0


def adaptive_enabled() -> bool:
    return os.environ.get("GRAPHC_ADAPTIVE_THREADS", "1").strip().lower() not in (
        "0", "false", "no", "off")


# The share of their time that a compile's processes spent on a core (CPU over wall) from
# which the cores count as free: the first calls then run on the team. (On an idle machine
# the processes run nearly all the time; beside another busy process about half of it.)
FREE_CORES_SHARE = 0.75


def first_setting(compile_extra: dict) -> int:
    """The setting a program's first calls take: the team where its compile just now found
    the cores free ("compile cpu share", processes.py), else one thread. A cold start's
    first call is part of what users wait for: on one thread a CNN step's costs about
    twice the team's."""
    share = compile_extra.get("compile cpu share")
    return TEAM if share is not None and share >= FREE_CORES_SHARE else ALONE


class ThreadChooser:
    """Sets a module's thread flag before each call from the times of earlier calls."""

    WINDOW = 5  # calls per setting whose median decides
    FIRST_RECHECK = 256  # calls before the setting not in use is tried again...
    LAST_RECHECK = 8192  # ...doubling while it keeps losing, up to this
    # Where one thread wins, the team is tried again soon, then less and less often: a
    # first trial disturbed by another process (right after a compile) kept a 1 ms step on
    # one thread for 512 calls (W5's bimodal step times), a 25 ms one (W7) for 6 s. A
    # trial on a busy machine costs one slow call (it ends there), so trying often is
    # cheap. (Where the team wins, a machine that gets busy shows in a stalled call.)
    FIRST_ALONE_RECHECK = 4 * WINDOW
    STALL_FACTOR = 4.0  # a team call this many times slower than its median: try alone now
    # Calls faster than this alone never try the team: waking it costs a few us, and its
    # threads spin on after a trial, taking the core from the next calls (a symbolic W2
    # step, 10 us, whose GEMMs have team code chosen at the representative batch).
    TEAM_MIN_SECONDS = 50e-6

    def __init__(self, flag_addresses: list[int], start: int = ALONE) -> None:
        self.flags = [ctypes.c_int32.from_address(a) for a in flag_addresses]
        self.times: dict[int, deque[float]] = {TEAM: deque(maxlen=self.WINDOW),
                                               ALONE: deque(maxlen=self.WINDOW)}
        # One thread first: a machine kept busy by others makes even the first team calls
        # slow (tens of ms), and starting the team is paid only when it is tried; the team
        # first where the caller has seen the cores free (first_setting).
        self.mode = start
        self.team_started = False
        self.calls = 0
        self.trial = 0  # calls left in a trial of the other setting
        self.recheck = self.FIRST_RECHECK
        self.alone_recheck = self.FIRST_ALONE_RECHECK
        self.next_check = 0
        # whether a team trial that one call stalled after faster ones may be tried again
        # after WINDOW calls (once, until the team next wins a trial)
        self.quick_retry = True
        # calls the runtime may make untimed (one thread, no trial until the last WINDOW
        # calls before the next check): they are counted in `calls` already. Timing a
        # call costs about 0.5 us, a tenth of a tiny step's.
        self.quiet = 0

    # New sizes whose calls do within this factor of the old ones' work keep the choice
    # (times of other sizes are dropped; the scheduled recheck stays): a trial right after
    # fit's short last batch or a predict on a few samples cost more than it could find.
    KEEP_FACTOR = 2.0

    def rebind(self, scale: float | None = None) -> None:
        """Starts the choice again (a symbolic program's new sizes: what was too short for
        a team, or too long to go alone, may not be now); the setting stays until then.
        `scale`: the new sizes' work over the old (None: unknown); within KEEP_FACTOR the
        choice is kept. A trial running is given up: the new sizes' calls run on the
        setting it challenged (they had stayed on the trial's, five calls or more before a
        check: a team trial cut short on a loaded machine kept 64 ms team calls where one
        thread took 1 ms, W1)."""
        for times in self.times.values():
            times.clear()
        if self.trial:
            self.trial = 0
            self.mode = ALONE if self.mode == TEAM else TEAM
        if scale is not None and 1 / self.KEEP_FACTOR <= scale <= self.KEEP_FACTOR:
            return
        self.trial = self.quiet = 0
        self.recheck = self.FIRST_RECHECK
        self.alone_recheck = self.FIRST_ALONE_RECHECK
        self.next_check = self.calls
        self.quick_retry = True

    def before_call(self) -> None:
        for flag in self.flags:
            flag.value = self.mode

    def after_call(self, seconds: float) -> None:
        self.calls += 1
        if self.calls == 1:
            return  # the first call touches fresh memory: not typical
        if self.mode == TEAM and not self.team_started:
            self.team_started = True
            return  # nor is the call that starts the team's threads
        mine = self.times[self.mode]
        full = len(mine) == self.WINDOW
        stalled = (self.mode == TEAM and full and not self.trial
                   and seconds > self.STALL_FACTOR * statistics.median(mine))
        mine.append(seconds)
        if self.trial:
            self.trial -= 1
            alone = self.times[ALONE]
            if self.mode == TEAM and alone and \
                    seconds > self.STALL_FACTOR * statistics.median(alone):
                self._give_up_team_trial()  # a stalled team: no more calls spent finding out
            elif self.trial == 0:
                self._choose()
            return
        if full and self.mode == ALONE and self.calls >= self.next_check and \
                statistics.median(mine) < self.TEAM_MIN_SECONDS:
            self.recheck = min(self.recheck * 2, self.LAST_RECHECK)  # look again later
            self.next_check = self.calls + self.recheck
            self.quiet = max(0, self.next_check - self.calls - self.WINDOW)
            self.calls += self.quiet
        elif full and (stalled or self.calls >= self.next_check):
            other = ALONE if self.mode == TEAM else TEAM
            self.times[other].clear()
            self.mode, self.trial = other, self.WINDOW
        elif full and self.mode == ALONE:
            self.quiet = max(0, self.next_check - self.calls - self.WINDOW)
            self.calls += self.quiet

    def _choose(self) -> None:
        before = ALONE if self.mode == TEAM else TEAM  # the setting the trial challenged
        team, alone = self.times[TEAM], self.times[ALONE]
        if statistics.median(team) > statistics.median(alone):
            self._alone()
            return
        self.mode = TEAM
        self.quick_retry = True
        # The same choice again: look less often; a change: look again soon.
        self.recheck = min(self.recheck * 2, self.LAST_RECHECK) if self.mode == before \
            else self.FIRST_RECHECK
        self.alone_recheck = self.FIRST_ALONE_RECHECK
        self.next_check = self.calls + self.recheck

    def _give_up_team_trial(self) -> None:
        """A team trial ended by a stalled call (its time the last of the team's). Where
        the trial's calls before it beat one thread, the stall was more likely a passing
        disturbance (another library's threads spinning on after their last call, the
        OS) than a busy machine, whose team calls are all slow: the team is tried again
        after WINDOW calls, once (W5 right after a compile had kept one thread for 20
        calls, close to half of what its benchmark times); else as _alone decides."""
        self.trial = 0
        before = list(self.times[TEAM])[:-1]
        self.times[TEAM].clear()
        alone = statistics.median(self.times[ALONE])
        if self.quick_retry and any(t < alone for t in before):
            self.quick_retry = False
            self.mode = ALONE
            self.next_check = self.calls + self.WINDOW
            return
        self._alone()

    def _alone(self) -> None:
        """One thread chosen: the team tried again after alone_recheck calls, doubling."""
        self.mode = ALONE
        self.recheck = self.alone_recheck
        self.alone_recheck = min(self.alone_recheck * 2, self.LAST_RECHECK)
        self.next_check = self.calls + self.recheck
