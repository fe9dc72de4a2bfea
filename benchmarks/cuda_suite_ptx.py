"""Compiles every CUDA C source in a folder (as tests/cuda_ptx_plugin.py writes them) to PTX
and assembles it for sm_90, and reports how many compiled, the kernels that spill, and the
largest register and shared-memory use. Every source is the prelude and self-contained
kernel functions, so the kernels are deduplicated across programs (by their text, name
aside) and compiled in batches of many, in parallel; with --cache, kernels assembled before
are not compiled again.
Run: PYTHONPATH=tests pytest -p cuda_ptx_plugin --cuda-ptx-dir DIR tests/...
     python benchmarks/cuda_suite_ptx.py DIR [--jobs 2] [--cache FILE]"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from graphc.backends.cuda import ptx
from graphc.backends.cuda.render import PRELUDE

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


def assemble(batch: dict[str, str], arch: str, assembler: str) -> tuple[dict, dict]:
    """({hash: stats}, {hash: error}) of a batch of kernels: compiled together, and where
    that fails, halved until the failing kernels are found."""
    source = PRELUDE + "\n\n" + "\n".join(batch.values())
    try:
        _, stats, _ = ptx.check_source(source, arch, assembler)
    except RuntimeError as exc:
        if len(batch) == 1:
            return {}, {next(iter(batch)): str(exc).strip().splitlines()[-1]}
        items = list(batch.items())
        a = assemble(dict(items[:len(items) // 2]), arch, assembler)
        b = assemble(dict(items[len(items) // 2:]), arch, assembler)
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
    cache_key = f"{args.arch}|{args.assembler}|{hashlib.sha256(PRELUDE.encode()).hexdigest()}"
    cached: dict = {}
    if args.cache is not None and args.cache.exists():
        stored = json.loads(args.cache.read_text())
        cached = stored.get("kernels", {}) if stored.get("key") == cache_key else {}
    todo = [h for h in unique if h not in cached]
    batches = [{h: unique[h] for h in todo[i:i + args.batch]}
               for i in range(0, len(todo), args.batch)]
    stats: dict[str, dict] = {h: cached[h] for h in unique if h in cached}
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # (each compilation is a process)
        for done, failed in pool.map(lambda b: assemble(b, args.arch, args.assembler), batches):
            stats.update(done)
            errors.update(failed)
    failed_whole = []
    for path in whole:
        try:
            ptx.check_source(path.read_text(), args.arch, args.assembler)
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
          f"for {args.arch} in {time.perf_counter() - t0:.0f} s; programs whose kernels all "
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
    if stats:
        regs = max(stats.items(), key=lambda kv: kv[1]["registers"])
        smem = max(stats.items(), key=lambda kv: kv[1]["shared_bytes"])
        print(f"most registers: {regs[1]['registers']} (k_{regs[0]} in "
              f"{_where(regs[0], programs)}); most shared memory: {smem[1]['shared_bytes']} B "
              f"(k_{smem[0]} in {_where(smem[0], programs)})")
    return 1 if failed or failed_whole else 0


def _where(digest: str, programs: dict[str, list[str]]) -> str:
    return next((name for name, hs in programs.items() if digest in hs), "?")


if __name__ == "__main__":
    raise SystemExit(main())
