"""Compiles every CUDA C source in a folder (as tests/cuda_ptx_plugin.py writes them) to PTX
and assembles it for sm_90, and reports how many compiled, the kernels that spill, and the
largest register and shared-memory use; exits 1 if a kernel fails to compile or spills, or
the time limit is reached (meant for CI, on what its test run recorded: not in .ci/run yet), 0 with
a note where no CUDA compiler is installed. Every source is the prelude and self-contained
kernel functions, so the kernels are deduplicated across programs by their text up to
names (the kernel's, its values', its buffers', their slots in the pointer table and nonzero
arena offsets: none of them changes the machine code but for an operand), renamed k_<hash> and
compiled in batches, in parallel processes; with --cache, kernels assembled before are not
compiled again. A failure names the kernel (as the program calls it), its program and the
test that made it (made-by-*.tsv).
Run: PYTHONPATH=tests pytest -p cuda_ptx_plugin --cuda-ptx-dir=DIR tests/...
     python benchmarks/cuda_suite_ptx.py DIR [--jobs 2] [--cache FILE] [--time-limit S]"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

from graphc.backends.cuda import ptx
from graphc.backends.cuda.render import PRELUDE

TOP = 3  # kernels listed with the most registers and the most shared memory
BATCH = 50  # kernels a compilation (of 20 to 200, 50 took the least time a kernel)
NORMAL = "names-v1"  # what kernels are told apart by (in the cache's key)
_KERNEL = re.compile(r'^extern "C" __global__ void __launch_bounds__\([^)]*\)\n(\w+)\(.*?\n}\n',
                     re.S | re.M)
# a buffer's pointer (backends/cuda/source.py, Writer.pointers): at a slot of the pointer
# table, or at an offset into the arena's slot
_POINTER = re.compile(r"^(\s+)([\w ]+)\* __restrict__ b(\d+) = \(\2\*\)\("
                      r"(?:\(char\*\)slots\[(\d+)\] \+ (\d+)|slots\[(\d+)\])\);$", re.M)
_SMALL_OFFSET = 2 ** 31  # below it an offset is one 32-bit immediate operand, whatever it is


def normalized(text: str) -> str:
    """A kernel's text with its buffers named gcb0, gcb1, ... and their slots numbered in
    the order they are declared, nonzero arena offsets below 2^31 made 16, and its values
    named gcv0, gcv1, ... in the order they appear: kernels that differ only there compile
    to the same instructions but for operands."""
    names: dict[str, str] = {}
    slots: dict[str, int] = {}

    def pointer(m: re.Match) -> str:
        indent, t, bid, arena, offset, slot = m.groups()
        names[bid] = f"gcb{len(names)}"
        if arena is None:
            return (f"{indent}{t}* __restrict__ {names[bid]} = ({t}*)(slots["
                    f"{slots.setdefault(slot, len(slots))}]);")
        off = int(offset)
        off = 16 if 0 < off < _SMALL_OFFSET else off
        return (f"{indent}{t}* __restrict__ {names[bid]} = ({t}*)((char*)slots["
                f"{slots.setdefault(arena, len(slots))}] + {off});")

    text = _POINTER.sub(pointer, text)
    text = re.sub(r"\bb(\d+)\b", lambda m: names.get(m.group(1), m.group(0)), text)
    values: dict[str, str] = {}  # the let-bound values, v<n> counted across the program
    return re.sub(r"\bv(\d+)\b",
                  lambda m: values.setdefault(m.group(1), f"gcv{len(values)}"), text)


def named_kernels(source: str) -> list[tuple[str, str, str]]:
    """(name in the source, hash, text named k_<hash>) of every kernel function in
    `source`, hashed by its text up to names (normalized)."""
    out = []
    for m in _KERNEL.finditer(source):
        text = normalized(m.group(0).replace(f"\n{m.group(1)}(", "\nKERNEL(", 1))
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        out.append((m.group(1), digest, text.replace("\nKERNEL(", f"\nk_{digest}(", 1)))
    return out


def kernels(source: str) -> dict[str, str]:
    """hash -> the kernel's text, named k_<hash>, of every kernel function in `source`."""
    return {h: text for _, h, text in named_kernels(source)}


def made_by(folder: Path) -> dict[str, str]:
    """program file -> the test that first ran it (the plugin's made-by-*.tsv files)."""
    out: dict[str, str] = {}
    for path in sorted(folder.glob("made-by-*.tsv")):
        for line in path.read_text().splitlines():
            name, _, test = line.partition("\t")
            out.setdefault(name, test)
    return out


def tool(assembler: str) -> str | None:
    """How the kernels are compiled and assembled here ("nvrtc": NVRTC and its own ptxas,
    one call a batch; "ptxas": NVRTC's or nvcc's PTX and the toolkit's ptxas), or None
    with nothing to do it (as tests/test_cuda_ptx.py, which skips only without both NVRTC
    and nvcc)."""
    if ptx.nvrtc_version() is not None:
        return assembler
    if ptx.nvcc() is not None and shutil.which("ptxas"):
        return "ptxas"
    return None


def _compile(source: str, arch: str, how: str) -> list[ptx.KernelStats]:
    if how == "nvrtc":
        return ptx.nvrtc_assemble(source, arch)
    return ptx.check_source(source, arch, "ptxas")[1]


def assemble(batch: dict[str, str], arch: str, how: str) -> tuple[dict, dict]:
    """({hash: stats}, {hash: error}) of a batch of kernels: compiled together, and where
    that fails, halved until the failing kernels are found."""
    source = PRELUDE + "\n\n" + "\n".join(batch.values())
    try:
        stats = _compile(source, arch, how)
    except RuntimeError as exc:
        if len(batch) == 1:
            return {}, {next(iter(batch)): str(exc).strip().splitlines()[-1]}
        items = list(batch.items())
        a = assemble(dict(items[:len(items) // 2]), arch, how)
        b = assemble(dict(items[len(items) // 2:]), arch, how)
        return {**a[0], **b[0]}, {**a[1], **b[1]}
    return {s.name[2:]: asdict(s) for s in stats}, {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--arch", default=ptx.ARCH)
    parser.add_argument("--assembler", choices=("nvrtc", "ptxas"), default="nvrtc",
                        help="NVRTC's own ptxas (fast), or the toolkit's ptxas")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=BATCH, help="kernels a compilation")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a JSON file of kernels assembled before (read and updated)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="fail if compiling takes longer (what is left is not compiled)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    how = tool(args.assembler)
    if how is None:
        print("cuda_suite_ptx: skipped: neither NVRTC (pip install nvidia-cuda-nvrtc) nor "
              "nvcc with ptxas is installed here, so nothing is compiled")
        return 0
    files = sorted(args.folder.glob("*.cu"))
    programs: dict[str, list[str]] = {}
    named: dict[str, tuple[str, str]] = {}  # hash -> (a program with it, the name there)
    unique: dict[str, str] = {}
    whole: list[Path] = []  # sources that are not the prelude and kernels: compiled as they are
    n_kernels = 0
    for path in files:
        source = path.read_text()
        found = named_kernels(source)
        if not source.startswith(PRELUDE) or not found:
            whole.append(path)
            continue
        programs[path.name] = [h for _, h, _ in found]
        n_kernels += len(found)
        for name, h, text in found:
            unique.setdefault(h, text)
            named.setdefault(h, (path.name, name))
    cache_key = (f"{args.arch}|{how}|{ptx.nvrtc_version()}|{NORMAL}|"
                 f"{hashlib.sha256(PRELUDE.encode()).hexdigest()}")
    cached: dict = {}
    if args.cache is not None and args.cache.exists():
        stored = json.loads(args.cache.read_text())
        cached = stored.get("kernels", {}) if stored.get("key") == cache_key else {}
    todo = [h for h in unique if h not in cached]
    # (dealt out in turn: kernels of one test, often alike in cost, go to different jobs)
    n_batches = max(1, -(-len(todo) // args.batch))
    batches = [{h: unique[h] for h in todo[i::n_batches]} for i in range(n_batches)] \
        if todo else []
    stats: dict[str, dict] = {h: cached[h] for h in unique if h in cached}
    errors: dict[str, str] = {}
    jobs = max(1, min(args.jobs, len(batches)))
    deadline = None if args.time_limit is None else t0 + args.time_limit
    left: list[str] = []  # kernels not compiled when the time limit came
    # (processes: nothing shared between the compilations, and a crash stays in its job)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(assemble, b, args.arch, how): b for b in batches}
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
            done, _ = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:  # the time limit: what runs now finishes, the rest is dropped
                for future, batch in pending.items():
                    if future.cancel() or not future.done():
                        left += list(batch)
                pool.shutdown(wait=False, cancel_futures=True)
                break
            for future in done:
                ok, failed = future.result()
                stats.update(ok)
                errors.update(failed)
                del pending[future]
    failed_whole = []
    for path in whole:
        try:
            _compile(path.read_text(), args.arch, how)
        except RuntimeError as exc:
            failed_whole.append((path.name, str(exc).strip().splitlines()[-1]))
    if args.cache is not None:
        tmp = args.cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": cache_key, "kernels": {**cached, **stats}}))
        tmp.replace(args.cache)
    tests = made_by(args.folder)
    missing = [h for h in unique if h not in stats and h not in errors and h not in left]
    failed_programs = {n for n, hs in programs.items() for h in hs if h in errors or h in missing}
    spilled = [(h, s) for h, s in stats.items() if s["spill_stores"] or s["spill_loads"]]
    print(f"{len(files)} programs, {n_kernels} kernels, {len(unique)} distinct (up to names): "
          f"compiled {len(todo) - len(left)} ({len(unique) - len(todo)} from the cache) in "
          f"{len(batches)} batches for {args.arch} ({how}, {jobs} jobs) in "
          f"{time.perf_counter() - t0:.0f} s; programs whose kernels all assembled: "
          f"{len(programs) - len(failed_programs)} of {len(programs)}; others compiled "
          f"whole: {len(whole) - len(failed_whole)} of {len(whole)}")
    count = sum(p.read_text().count("Traceback") for p in args.folder.glob("render-errors*.txt"))
    print(f"programs that did not schedule or render (a test's invalid programs too, which "
          f"every backend refuses): {count}")
    for h in [h for h in unique if h in errors or h in missing]:
        print(f"FAILED {_where(h, named, tests)}: {errors.get(h, 'not reported by ptxas')}")
    for name, why in failed_whole:
        print(f"FAILED {name} (made by {tests.get(name, '?')}): {why}")
    if left:
        print(f"FAILED: the time limit of {args.time_limit:.0f} s was reached with {len(left)} "
              f"of {len(unique)} distinct kernels not compiled (raise --time-limit, or find "
              f"what made compiling slower: a new test's many programs, a costlier kernel)")
    print(f"kernels that spill: {len(spilled)}")
    for h, s in spilled:
        print(f"  {_where(h, named, tests)}: {s['spill_stores']} B stores, "
              f"{s['spill_loads']} B loads")
    for field, unit in (("registers", ""), ("shared_bytes", " B")):
        top = sorted(stats.items(), key=lambda kv: -kv[1][field])[:TOP]
        print(f"most {field.replace('_bytes', ' memory')}: " + "; ".join(
            f"{s[field]}{unit} ({_where(h, named, tests)})" for h, s in top))
    return 1 if failed_programs or failed_whole or spilled or left else 0


def _where(digest: str, named: dict[str, tuple[str, str]], tests: dict[str, str]) -> str:
    """A kernel as a reader finds it: its name in a program, the program, its test."""
    program, name = named.get(digest, ("?", "?"))
    return f"kernel {name} (k_{digest}) of {program}, made by {tests.get(program, '?')}"


if __name__ == "__main__":
    raise SystemExit(main())
