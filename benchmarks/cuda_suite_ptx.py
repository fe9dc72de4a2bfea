"""Compiles every CUDA C source in a folder (as tests/cuda_ptx_plugin.py writes them) to PTX
and assembles it for sm_90, and reports how many compiled, the kernels that spill, and the
largest register and shared-memory use; exits 1 if a kernel fails to compile or spills (CI
runs it after the suite: .ci/run), 0 with a note where no CUDA compiler is installed. Every
source is the prelude and self-contained kernel functions, so the kernels are deduplicated
across programs (by their text, name aside), renamed k_<hash> and compiled in batches of
many, in parallel processes; with --cache, kernels assembled before are not compiled again.
Run: PYTHONPATH=tests pytest -p cuda_ptx_plugin --cuda-ptx-dir=DIR tests/...
     python benchmarks/cuda_suite_ptx.py DIR [--jobs 2] [--cache FILE]"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from graphc.backends.cuda import ptx
from graphc.backends.cuda.render import PRELUDE

TOP = 3  # kernels listed with the most registers and the most shared memory
_KERNEL = re.compile(r'^extern "C" __global__ void __launch_bounds__\([^)]*\)\n(\w+)\(.*?\n}\n',
                     re.S | re.M)


def kernels(source: str) -> dict[str, str]:
    """hash -> the kernel's text, named k_<hash>, of every kernel function in `source`."""
    out = {}
    for m in _KERNEL.finditer(source):
        text = m.group(0).replace(f"\n{m.group(1)}(", "\nKERNEL(", 1)
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        out[digest] = text.replace("\nKERNEL(", f"\nk_{digest}(", 1)
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
    parser.add_argument("--batch", type=int, default=100, help="kernels a compilation")
    parser.add_argument("--cache", type=Path, default=None,
                        help="a JSON file of kernels assembled before (read and updated)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    how = tool(args.assembler)
    if how is None:
        print("cuda_suite_ptx: skipped: neither NVRTC (pip install nvidia-cuda-nvrtc) nor "
              "nvcc with ptxas is installed here, so nothing is compiled")
        return 0
    files = sorted(args.folder.glob("*.cu"))
    programs: dict[str, list[str]] = {}
    unique: dict[str, str] = {}
    whole: list[Path] = []  # sources that are not the prelude and kernels: compiled as they are
    for path in files:
        source = path.read_text()
        found = kernels(source)
        if not source.startswith(PRELUDE) or not found:
            whole.append(path)
            continue
        programs[path.name] = list(found)
        unique.update(found)
    cache_key = (f"{args.arch}|{how}|{ptx.nvrtc_version()}|"
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
    # (processes: nothing shared between the compilations, and a crash stays in its job)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for done, failed in pool.map(assemble, batches, [args.arch] * len(batches),
                                     [how] * len(batches)):
            stats.update(done)
            errors.update(failed)
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
    missing = [h for h in unique if h not in stats and h not in errors]
    failed = [(name, h) for name, hs in programs.items() for h in hs if h in errors or h in missing]
    spilled = [(h, s) for h, s in stats.items() if s["spill_stores"] or s["spill_loads"]]
    n_kernels = sum(len(hs) for hs in programs.values())
    print(f"{len(files)} programs, {n_kernels} kernels, {len(unique)} distinct: compiled "
          f"{len(todo)} ({len(unique) - len(todo)} from the cache) in {len(batches)} batches "
          f"for {args.arch} ({how}, {jobs} jobs) in {time.perf_counter() - t0:.0f} s; "
          f"programs whose kernels all "
          f"assembled: {len(programs) - len({n for n, _ in failed})} of {len(programs)}; "
          f"others compiled whole: {len(whole) - len(failed_whole)} of {len(whole)}")
    errors_file = args.folder / "render-errors.txt"
    count = errors_file.read_text().count("Traceback") if errors_file.exists() else 0
    print(f"programs that did not schedule or render (a test's invalid programs too, which "
          f"every backend refuses): {count}")
    for name, h in failed:
        print(f"FAILED {name}: kernel k_{h}: {errors.get(h, 'not reported by ptxas')}")
    for name, why in failed_whole:
        print(f"FAILED {name}: {why}")
    print(f"kernels that spill: {len(spilled)}")
    for h, s in spilled:
        print(f"  k_{h} ({_where(h, programs)}): {s['spill_stores']} B stores, "
              f"{s['spill_loads']} B loads")
    for field, unit in (("registers", ""), ("shared_bytes", " B")):
        top = sorted(stats.items(), key=lambda kv: -kv[1][field])[:TOP]
        print(f"most {field.replace('_bytes', ' memory')}: " + "; ".join(
            f"{s[field]}{unit} (k_{h} in {_where(h, programs)})" for h, s in top))
    return 1 if failed or failed_whole or spilled else 0


def _where(digest: str, programs: dict[str, list[str]]) -> str:
    return next((name for name, hs in programs.items() if digest in hs), "?")


if __name__ == "__main__":
    raise SystemExit(main())
