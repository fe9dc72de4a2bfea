"""Compiles every CUDA C source in a folder (as tests/cuda_ptx_plugin.py writes them) to PTX
and assembles it for sm_90, and reports how many compiled, the kernels that spill, and the
largest register and shared-memory use.
Run: PYTHONPATH=tests pytest -p cuda_ptx_plugin --cuda-ptx-dir DIR tests/...
     python benchmarks/cuda_suite_ptx.py DIR"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from graphc.backends.cuda import ptx


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--arch", default=ptx.ARCH)
    parser.add_argument("--assembler", choices=("nvrtc", "ptxas"), default="nvrtc",
                        help="NVRTC's own ptxas (fast), or the toolkit's ptxas")
    args = parser.parse_args(argv)
    files = sorted(args.folder.glob("*.cu"))
    failed, spilled, kernels, hows = [], [], 0, set()
    most_regs, most_smem = None, None
    t0 = time.perf_counter()
    for path in files:
        try:
            _, stats, how = ptx.check_source(path.read_text(), args.arch, args.assembler)
        except RuntimeError as exc:
            failed.append((path.name, str(exc).splitlines()[-1]))
            continue
        hows.add(how)
        kernels += len(stats)
        for s in stats:
            if s.spill_stores or s.spill_loads:
                spilled.append((path.name, s))
            if most_regs is None or s.registers > most_regs.registers:
                most_regs = s
            if most_smem is None or s.shared_bytes > most_smem.shared_bytes:
                most_smem = s
    errors = args.folder / "render-errors.txt"
    print(f"{len(files)} programs, {kernels} kernels: {len(files) - len(failed)} compiled and "
          f"assembled for {args.arch} ({', '.join(sorted(hows))}) in "
          f"{time.perf_counter() - t0:.0f} s")
    count = errors.read_text().count("Traceback") if errors.exists() else 0
    print(f"programs that did not schedule or render (a test's invalid programs too, which "
          f"every backend refuses): {count}")
    for name, why in failed:
        print(f"FAILED {name}: {why}")
    print(f"kernels that spill: {len(spilled)}")
    for name, s in spilled:
        print(f"  {name} {s.name}: {s.spill_stores} B stores, {s.spill_loads} B loads")
    if most_regs is not None and most_smem is not None:
        print(f"most registers: {most_regs.registers} ({most_regs.name}); most shared memory: "
              f"{most_smem.shared_bytes} B ({most_smem.name})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
