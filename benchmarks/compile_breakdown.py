"""Where a cold compile of the W6 ResNet step (or the W7 LSTM step, or a deep MLP step) spends
its time, phase by phase, in CPU seconds of this one process (so a busy machine changes the
figures less than wall time would): building the graph and its gradient, the optimizer, the
scheduler, the kernel plan (signatures), writing each unit's LLVM IR, LLVM's optimizer and
code generation per kernel kind, linking, and the first call against a warm one. Everything
runs here, one unit after another (the real compile deals the units out to processes: its
wall time is about the LLVM and IR-writing share divided among them).
Run: python benchmarks/compile_breakdown.py [--model W6|W7|W7:4096|mlp96|mlp8...] [--top 10]
     [--modules 3] (the modules of a two-process compile instead, least CPU of 3 each)"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build(model: str):
    """A function that builds the step, and one call's arguments."""
    import bench_resnet as br
    if model == "W6":
        params = br.resnet_params()
        return (lambda: br.graphc_resnet_step(params)), br.resnet_data()
    if model.startswith("W7"):  # W7 or W7:T, the char-LSTM step over T steps
        import bench_rnn
        seq = int(model[3:]) if model.startswith("W7:") else bench_rnn.SEQ
        w7 = bench_rnn.w7_params()
        return (lambda: bench_rnn.graphc_w7_step(w7, seq)), bench_rnn.w7_data(seq)
    depth = int(model[3:])
    params = br.mlp_params(depth)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(64, 256)).astype(np.float32), rng.integers(0, 10, 64)
    return (lambda: br.graphc_mlp_step(params)), (x, y)


def _compiled(text: str | list[str], machine, clock) -> tuple[bytes, float, float, float]:
    """jit._object_of's steps, each timed with `clock`: the object, parse, optimize, emit
    (a list of texts: linked into one module first)."""
    import llvmlite.binding as llvm
    from graphc.backends.llvm import jit
    texts = [text] if isinstance(text, str) else text
    t0 = clock()
    context = llvm.create_context()
    module = llvm.parse_assembly(texts[0], context=context)
    for more in texts[1:]:
        module.link_in(llvm.parse_assembly(more, context=context))
    module.triple = llvm.get_default_triple()
    module.verify()
    t1 = clock()
    light = jit.is_light(texts)
    jit.optimize_module(module, machine, light, jit.speed_level(texts))
    t2 = clock()
    obj = jit.code_machine(light, machine).emit_object(module)
    return obj, t1 - t0, t2 - t1, clock() - t2


def _modules(schedule, repeat: int, clock) -> None:
    """Each module of a two-process compile (codegen.batches) written and compiled `repeat`
    times, each phase's least CPU time: writing (a fresh ModuleWriter each time), parse,
    optimize, emit. A packed GEMM unit is two modules, as compiled with an empty cache: its
    drivers and its shared functions (gemm_library.py; "library", written with the
    drivers)."""
    from graphc.backends.llvm import codegen, gemm_library, jit, vector_abi
    units = list(codegen.ModuleWriter(schedule).plan.units)
    machine = jit._new_machine()
    print("modules of a two-process compile: units, pipeline, IR chars; least CPU s of "
          f"{repeat}: write, parse, optimize, emit, sum")
    total = [0.0] * 4
    for module in codegen.batches(units, list(range(len(units))), 2):
        rows: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        for _ in range(repeat):
            writer = codegen.ModuleWriter(schedule)
            t0 = clock()
            parts = [writer.unit_parts(units[n]) for n in module]
            pieces = [p for _, ps in parts for p in ps]
            built = {"": [text for text, _ in parts]}
            if pieces:
                built["library"] = [gemm_library.module_text(pieces, vector_abi.annotate)]
            written = clock() - t0
            for name, texts in built.items():
                _, parse, opt, emit = _compiled(texts, machine, clock)
                seconds = [written if not name else 0.0, parse, opt, emit]
                rows[name] = [min(a, b) for a, b in zip(rows.get(name, [float("inf")] * 4),
                                                        seconds)]
                sizes[name] = sum(map(len, texts))
        kind = "light" if units[module[0]].light else "O3"
        for name, best in rows.items():
            total = [a + b for a, b in zip(total, best)]
            label = f"{len(module):3d} units {kind:<5}" if not name else f"{name:>15}"
            print(f"  {label} {sizes[name]:8d}  " + " ".join(f"{v:6.3f}" for v in best)
                  + f"  {sum(best):6.3f}")
    print(f"  {'total':<26}  " + " ".join(f"{v:6.3f}" for v in total) + f"  {sum(total):6.3f}")


def _huge_pages() -> str:
    """How much of this process's memory is in transparent huge pages (Linux)."""
    try:
        with open("/proc/self/smaps_rollup") as status:
            return next((line.split(":")[1].strip() for line in status
                         if line.startswith("AnonHugePages")), "?")
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="W6")
    parser.add_argument("--top", type=int, default=10, help="the slowest units listed")
    parser.add_argument("--modules", type=int, default=0, metavar="N",
                        help="instead: the modules a two-process compile builds (codegen."
                             "batches), each written and compiled N times here, the least "
                             "CPU time of each phase (steadier on a busy machine)")
    args = parser.parse_args(argv)
    os.environ["GRAPHC_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphc-breakdown-")
    import graphc  # noqa: F401
    from graphc.backends.llvm import codegen, jit
    jit._init()
    make, call_args = build(args.model)
    clock = time.process_time
    phases: dict[str, float] = {}

    t = clock()
    f = make()
    phases["graph + gradient"] = clock() - t
    t = clock()
    _ = f._exe.program.graph  # the optimizer runs on first use
    phases["optimize"] = clock() - t
    t = clock()
    schedule = f.schedule(*(a.shape for a in call_args))
    phases["schedule (specialize, lower, memory plan)"] = clock() - t
    t = clock()
    writer = codegen.ModuleWriter(schedule)
    phases["kernel plan (signatures, units)"] = clock() - t

    if args.modules:
        _modules(schedule, args.modules, clock)
        return
    machine = jit._new_machine()
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
    units = []
    objects = []
    t = clock()
    entry = writer.entry_text()
    phases["IR: entry point"] = clock() - t
    obj, _, opt, emit = _compiled(entry, machine, clock)
    objects.append(obj)
    phases["LLVM: entry point"] = opt + emit
    for unit in writer.plan.units:
        kernel = schedule.kernels[unit.members[0]]
        kind = kernel.kind + ("s packed" if len(unit.members) > 1 else "") + \
            (" (vectors, light)" if unit.vectors else " (light)" if unit.light else "")
        t = clock()
        text = writer.unit_text(unit)
        written = clock() - t
        obj, parse, opt, emit = _compiled(text, machine, clock)
        total = parse + opt + emit
        objects.append(obj)
        row = by_kind[kind]
        row[0] += 1
        row[1] += written
        row[2] += parse
        row[3] += opt
        row[4] += emit
        fused = "+".join(getattr(kernel, "fused", ())[:3])
        units.append((total, kind, fused, getattr(kernel, "shape", ""), len(text)))
    t = clock()
    jit.load_objects(objects, jit.ENTRY)
    phases["LLVM: link"] = clock() - t
    phases["IR: units"] = sum(r[1] for r in by_kind.values())
    phases["LLVM: units"] = sum(r[2] + r[3] + r[4] for r in by_kind.values())

    f._exe._get(tuple(a.shape for a in call_args))  # the real compile (not counted again)
    t = clock()
    f(*call_args)
    first = clock() - t
    t = clock()
    f(*call_args)
    phases["first call over a warm one (arena's first touch)"] = max(0.0, first - (clock() - t))

    print(f"{args.model}: CPU seconds per phase (one process, one unit after another; "
          f"{_huge_pages()} in huge pages after the calls)")
    for name, seconds in phases.items():
        print(f"  {name:<52} {seconds:7.3f}")
    print(f"  {'total':<52} {sum(v for v in phases.values() if v == v):7.3f}")
    print("LLVM per kernel kind: units, IR writing, parse, optimize, emit (s)")
    for kind, (n, written, parse, opt, emit) in sorted(by_kind.items(),
                                                     key=lambda kv: -sum(kv[1][1:])):
        print(f"  {kind:<30} {n:4d} {written:7.3f} {parse:7.3f} {opt:7.3f} {emit:7.3f}")
    print(f"the {args.top} slowest units (write + compile s, kind, fused ops, shape, IR chars):")
    for total, kind, fused, shape, chars in sorted(units, key=lambda u: -u[0])[:args.top]:
        print(f"  {total:6.3f}  {kind:<14} {fused:<28} {shape}  {chars}")


if __name__ == "__main__":
    main()
