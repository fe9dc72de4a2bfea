"""A loop body's memory plan with symbolic sizes (graphc/schedule/loop_memory.py): offsets as
size expressions that keep temporaries alive at once apart at every binding, aligned, and
that reuse memory as temporaries die."""
from __future__ import annotations

import itertools

import numpy as np

from graphc import sizes
from graphc.schedule.loop_memory import aligned, place_symbolic
from graphc.schedule.memory import ALIGN

N, M = sizes.named("N_loopmem"), sizes.named("M_loopmem")


def check_apart(nbytes, spans, plan, values) -> None:
    """At `values`: every temporary within the arena, aligned, and clear of every other one
    whose lifetime overlaps its own."""
    at = {b: sizes.evaluate(o, values) for b, o in plan.offsets.items()}
    size = {b: sizes.evaluate(n, values) for b, n in nbytes.items()}
    arena = sizes.evaluate(plan.arena_bytes, values)
    for b in nbytes:
        assert at[b] % ALIGN == 0 and 0 <= at[b] and at[b] + size[b] <= arena
    for a, b in itertools.combinations(nbytes, 2):
        (a0, a1), (b0, b1) = spans[a], spans[b]
        if a0 <= b1 and b0 <= a1:
            assert at[a] + size[a] <= at[b] or at[b] + size[b] <= at[a], (a, b, values)


def test_aligned_is_a_multiple_of_the_alignment_never_below_the_size():
    for d in [4 * N, 40 * N + 12, 4 * N * M + 8 * M, sizes.floordiv(N, 3) * 4 + 1]:
        a = aligned(d)
        for n, m in itertools.product([0, 1, 3, 17, 128], [1, 5]):
            values = {next(iter(N.atoms())): n, next(iter(M.atoms())): m}
            got = sizes.evaluate(a, values)
            assert got % ALIGN == 0 and got >= sizes.evaluate(d, values)
    assert aligned(0) == ALIGN and aligned(65) == 128


def test_random_bodies_keep_live_temporaries_apart_at_every_binding():
    rng = np.random.default_rng(0)
    choices = [4 * N, 16 * N, 4 * M, 4096, 12 * N * M, 40 * N + 4 * M, 100, 4 * N + 64]
    for _ in range(60):
        count = int(rng.integers(2, 12))
        nbytes = {b: choices[int(rng.integers(len(choices)))] for b in range(count)}
        spans = {}
        for b in nbytes:
            first = int(rng.integers(0, 8))
            spans[b] = (first, first + int(rng.integers(0, 4)))
        plan = place_symbolic(nbytes, spans)
        for n, m in itertools.product([1, 2, 7, 33, 300], [1, 3, 64]):
            check_apart(nbytes, spans, plan, {next(iter(N.atoms())): n,
                                              next(iter(M.atoms())): m})


def test_a_chain_of_short_lives_reuses_memory():
    """An RNN step's temporaries: each read by the next kernel only. Two slots suffice at
    every batch size (no max() where the sizes are ordered the same way at every binding)."""
    nbytes = {b: 16 * N for b in range(6)}
    spans = {b: (b, b + 1) for b in range(6)}
    plan = place_symbolic(nbytes, spans)
    assert plan.arena_bytes == 2 * 64 * N  # (16*N rounded up per coefficient: 64*N)
    assert set(plan.offsets.values()) == {0, 64 * N}
