"""Where a compiled llvm step spends its time: each kernel of the W6 ResNet step (or W5, LeNet;
or W7, the char-LSTM, whose two loops are one kernel each)
called on its own through the runtime, in program order, timed per call and summed by kernel
class (convolution GEMMs by direction, im2col copies, col2im, BatchNorm reductions, ...).
The kernels are the ones the step runs, on its own arena and parameters; the step's sum of
kernel times is printed beside the step's own median, so the Python timing overhead shows.
--clock cpu times each kernel by the calling thread's CPU time (with --threads alone only:
a team's other threads are not counted): steadier than wall time on a machine that other
processes keep busy, which stretches wall times several-fold at random.
--sizes symbolic (or specialize, auto) compiles the step with those llvm sizes: a symbolic
program's kernels are timed alike, on its binding for the call's batch; --sizes both times
the specialised module and the symbolic program in turn, in the same run, kernel by kernel
(their schedules have the same kernels), and lists the kernels the symbolic one loses on.
Run: python benchmarks/kernel_breakdown.py [--model W6|W5|W7] [--repeat 30] [--top 25]
     [--threads adaptive|team|alone|compare] [--clock wall|cpu] [--sizes ...|both]
--threads compare times every kernel alone and on the team in turn (wall time, same run) and
lists each kernel's one- and two-thread times and speedup: which kernels scale badly."""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import median_ms  # noqa: E402 (the same timer as W1-W6)

_KERNEL = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)


def build(model: str, sizes: str | None = None):
    """The compiled step and one call's arguments (`sizes`: the llvm backend's option)."""
    options = None if sizes is None else {"sizes": sizes}
    if model == "W7":
        from bench_rnn import graphc_w7_step, w7_data, w7_params
        return graphc_w7_step(w7_params(), options=options), w7_data()
    if model == "W6":
        from bench_resnet import graphc_resnet_step, resnet_data, resnet_params
        x, y = resnet_data()
        return graphc_resnet_step(resnet_params(), backend_options=options), (x, y)
    from bench_training import cnn_data, graphc_cnn_step
    params, x, y = cnn_data()
    return graphc_cnn_step(params, backend_options=options), (x, y)


def entry_tables(entry_ir: str, desc: list[int] | None = None
                 ) -> tuple[list[str], list[list[int]]]:
    """Each kernel's function name and the sources of its pointer table (a slot, or
    -1 - an arena offset), read back from the entry module (backends/llvm/entry.py);
    `desc`: a symbolic program's descriptor for its binding (its entry module has none)."""
    names = re.findall(r"^; kernel \d+: (\S+)$", entry_ir, re.M)
    if desc is None:
        desc_text = re.search(
            r"@graphc_entry_desc = internal constant \[\d+ x i64\] \[(.*)\]", entry_ir)
        desc = [int(v) for v in re.findall(r"i64 (-?\d+)", desc_text.group(1))] \
            if desc_text else []
    tables, pos = [], 0
    for _ in names:
        n = desc[pos]
        tables.append(desc[pos + 2:pos + 2 + n])
        pos += 2 + n
    return names, tables


def kernel_class(kernel, schedule) -> str:
    """A short name for what a kernel does, by its kind and what the scheduler fused in."""
    kind = kernel.kind
    if kind == "gemm":
        if getattr(kernel, "b_split", None) is not None:  # (a forward conv or data gradient)
            return "gemm conv implicit"
        return "gemm " + gemm_role(kernel, schedule)
    fused = tuple(getattr(kernel, "fused", ()))
    if kind == "elementwise" and fused == ("pad",) or fused == ("copy",):
        return "im2col copy"
    if kind == "elementwise" and "windows_grad" in fused:
        return "col2im (windows_grad)"
    if kind == "elementwise" and fused == ("zeros",):
        return "zero fill"
    if kind == "loop":
        return "loop reversed" if kernel.reverse else "loop"
    if kind == "reduce":
        return f"reduce/{kernel.op}"
    return kind


def gemm_role(kernel, schedule) -> str:
    """conv forward / data gradient / weight gradient / 1x1 conv / dense, from the sizes and
    strides: a convolution GEMM has a side of N*OH*OW (the weight gradient: its depth); a
    1x1 convolution's is one product per image."""
    from graphc.sizes import hint  # (a symbolic program's sizes: their representative values)
    if int(np.prod([hint(d) for d in kernel.batch])) > 1:
        return "batched (1x1 conv)"  # one product per image
    m, n, k = (hint(d) for d in (kernel.m, kernel.n, kernel.k))
    big = max(m, n, k)
    if big < 1024:
        return "small (dense)"
    if k == big:
        return "conv weight grad"
    # the forward pass reads the weights as they are stored; the data gradient transposed
    return "conv forward" if kernel.a.strides[-1] == 1 else "conv data grad"


def kernel_calls(compiled, args) -> tuple[list, list]:
    """(function, pointer table, its address) for each kernel of the step, in program order,
    on the step's own arena, inputs and fresh outputs (returned too: keep them alive)."""
    # (a symbolic program: its binding for the last call's shapes)
    bound = getattr(compiled, "current", None)
    desc = None if bound is None else [int(v) for v in bound.desc]
    names, tables = entry_tables(compiled.ir_texts[0], desc)
    if len(names) != len(compiled.schedule.kernels):
        raise SystemExit("the entry module and the schedule disagree: kernel counts differ")
    bufs = compiled.table
    arena = bufs[compiled.plan.arena_slot] if bound is not None else compiled.arena.ctypes.data
    for slot, a in zip(compiled.input_slots, args):
        bufs[slot] = a.ctypes.data
    outputs = bound.outputs if bound is not None else compiled.outputs
    outs = [np.empty(shape, dtype) for _, shape, dtype in outputs]
    for (slot, _, _), out in zip(outputs, outs):
        bufs[slot] = out.ctypes.data
    engine = compiled.engine[0] if isinstance(compiled.engine, tuple) else compiled.engine
    calls = []
    for name, sources in zip(names, tables):
        table = (ctypes.c_void_p * max(1, len(sources)))()
        for j, src in enumerate(sources):
            table[j] = arena + (-1 - src) if src < 0 else bufs[src]
        address = engine.get_function_address(name)
        if not address:  # (calling address 0 crashed the process)
            raise SystemExit(f"kernel {name}: the engine has no address for it")
        fn = _KERNEL(address)
        calls.append((fn, table, ctypes.addressof(table)))
    return calls, outs


def _classes(compiled) -> list[str]:
    """Each kernel's class (a symbolic program's sizes read at its representative batch)."""
    from graphc import sizes
    schedule = compiled.schedule
    with sizes.representative(getattr(compiled, "representative", None) or {}):
        return [kernel_class(k, schedule) for k in schedule.kernels]


def breakdown(f, args, repeat: int, threads: str, clock: str = "wall"):
    f(*args)
    compiled = f._exe.last
    schedule = compiled.schedule
    names = _classes(compiled)
    calls, _outs = kernel_calls(compiled, args)
    if threads != "adaptive" and compiled.chooser is not None:
        for flag in compiled.chooser.flags:
            flag.value = 1 if threads == "team" else 0
    elif compiled.chooser is not None:
        for _ in range(40):  # let the chooser settle, then keep its choice
            f(*args)
        compiled.chooser.before_call()
    step_ms = median_ms(lambda: [fn(addr) for fn, _, addr in calls], repeat)
    now = time.thread_time if clock == "cpu" else time.perf_counter
    times = np.zeros((repeat, len(calls)))
    for r in range(repeat):
        for i, (fn, _, addr) in enumerate(calls):
            t0 = now()
            fn(addr)
            times[r, i] = now() - t0
    per_kernel = np.median(times, axis=0) * 1e3
    total = float(per_kernel.sum())
    classes: dict[str, list[float]] = defaultdict(list)
    for name, ms in zip(names, per_kernel):
        classes[name].append(float(ms))
    print(f"{len(calls)} kernels; kernels replayed as one step: {step_ms:.2f} ms (median of "
          f"{repeat}); sum of per-kernel medians {total:.2f} ms; threads: {threads}; "
          f"clock: {clock}")
    print(f"  {'class':<26}{'kernels':>8}{'ms':>9}{'share':>8}")
    for name, ms in sorted(classes.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {name:<26}{len(ms):>8}{sum(ms):>9.2f}{sum(ms) / total:>8.1%}")
    return per_kernel, schedule, names


def versus(model: str, repeat: int, top: int) -> None:
    """The specialised module's and the symbolic program's kernels, one thread, CPU time,
    rounds alternating between the two (each kernel in program order, on its own program's
    arena): per class and the kernels where the symbolic one loses most. The best of the
    rounds: what a kernel costs without other processes' interference."""
    programs = []
    for sizes in ("specialize", "symbolic"):
        f, data = build(model, sizes)
        f(*data)
        compiled = f._exe.last
        calls, outs = kernel_calls(compiled, data)
        if compiled.chooser is not None:
            for flag in compiled.chooser.flags:
                flag.value = 0
        programs.append((compiled, calls, outs, _classes(compiled)))
    if len(programs[0][1]) != len(programs[1][1]):
        raise SystemExit("the two programs' schedules have different kernels")
    times = np.zeros((2, repeat, len(programs[0][1])))
    for r in range(repeat):
        for p in (0, 1) if r % 2 else (1, 0):  # (either first in turn)
            for i, (fn, _, addr) in enumerate(programs[p][1]):
                t0 = time.thread_time()
                fn(addr)
                times[p, r, i] = time.thread_time() - t0
    spec, sym = (times[p].min(axis=0) * 1e3 for p in (0, 1))
    print(f"{len(spec)} kernels, one thread, CPU ms, best of {repeat} alternating rounds: "
          f"specialised {spec.sum():.2f}, symbolic {sym.sum():.2f} "
          f"({sym.sum() / spec.sum():.3f}x)")
    classes: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(programs[0][3]):
        classes[name].append(i)
    print(f"  {'class':<26}{'kernels':>8}{'special':>9}{'symbol':>9}{'ratio':>8}")
    for name, idx in sorted(classes.items(), key=lambda kv: -sym[kv[1]].sum()):
        a, b = spec[idx].sum(), sym[idx].sum()
        print(f"  {name:<26}{len(idx):>8}{a:>9.3f}{b:>9.3f}{b / a:>8.3f}")
    schedule = programs[1][0].schedule
    print(f"the {top} kernels the symbolic program loses most on (ms special, symbolic):")
    for i in np.argsort(spec - sym)[:top]:
        print(f"  k{i:<4}{spec[i]:8.3f}{sym[i]:8.3f}  {programs[0][3][i]:<24} "
              f"{schedule.kernels[i].header()}")


def compare(f, args, repeat: int) -> None:
    """Each kernel's wall time alone and on the team, rounds of the whole step alternating so
    that both see the same load; per class and per kernel, with the speedup (1.0: the
    kernel has no team)."""
    f(*args)
    compiled = f._exe.last
    schedule = compiled.schedule
    names = _classes(compiled)
    calls, _outs = kernel_calls(compiled, args)
    flags = compiled.chooser.flags if compiled.chooser is not None else []
    times = np.zeros((2, repeat, len(calls)))
    steps = np.zeros((2, repeat))
    for r in range(repeat):
        for mode in (0, 1):  # whole rounds: each kernel finds its inputs as the step leaves them
            for flag in flags:
                flag.value = mode
            start = time.perf_counter()
            for i, (fn, _, addr) in enumerate(calls):
                t0 = time.perf_counter()
                fn(addr)
                times[mode, r, i] = time.perf_counter() - t0
            steps[mode, r] = time.perf_counter() - start
    alone, team = (np.median(times[m], axis=0) * 1e3 for m in (0, 1))
    a_step, t_step = (float(np.median(steps[m])) * 1e3 for m in (0, 1))
    print(f"{len(calls)} kernels, median of {repeat}, wall ms: sum of kernels alone "
          f"{alone.sum():.2f}, team {team.sum():.2f} ({alone.sum() / team.sum():.2f}x); "
          f"rounds alone {a_step:.2f}, team {t_step:.2f}")
    classes: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        classes[name].append(i)
    print(f"  {'class':<26}{'kernels':>8}{'alone':>9}{'team':>9}{'speedup':>9}")
    for name, idx in sorted(classes.items(), key=lambda kv: -team[kv[1]].sum()):
        a, t = alone[idx].sum(), team[idx].sum()
        print(f"  {name:<26}{len(idx):>8}{a:>9.2f}{t:>9.2f}{a / t:>9.2f}")
    serial = [i for i in range(len(calls)) if alone[i] < 1.15 * team[i]]
    print(f"kernels the team does not speed up (< 1.15x): {len(serial)}, alone "
          f"{alone[serial].sum():.2f} ms, team {team[serial].sum():.2f} ms")
    print("each kernel (alone ms, team ms, speedup), by time lost against a perfect halving:")
    for i in np.argsort(-(team - alone / 2)):
        k = schedule.kernels[i]
        print(f"  k{i:<4}{alone[i]:8.3f}{team[i]:8.3f}{alone[i] / team[i]:6.2f}x  "
              f"{names[i]:<24} {k.header()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="W6", choices=("W7", "W6", "W5"))
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--top", type=int, default=20, help="slowest kernels to list")
    parser.add_argument("--threads", default="adaptive",
                        choices=("adaptive", "team", "alone", "compare"))
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    parser.add_argument("--sizes", default=None,
                        choices=("auto", "symbolic", "specialize", "both"))
    args = parser.parse_args(argv)
    if args.sizes == "both":
        return versus(args.model, args.repeat, args.top)
    if args.clock == "cpu" and args.threads != "alone":
        parser.error("--clock cpu needs --threads alone (a team's threads are not timed)")
    f, data = build(args.model, args.sizes)
    if args.threads == "compare":
        return compare(f, data, args.repeat)
    per_kernel, schedule, names = breakdown(f, data, args.repeat, args.threads, args.clock)
    print(f"slowest {args.top} kernels:")
    for i in np.argsort(-per_kernel)[:args.top]:
        k = schedule.kernels[i]
        print(f"  k{i:<4}{per_kernel[i]:8.3f} ms  {names[i]:<24} {k.header()}")


if __name__ == "__main__":
    main()
