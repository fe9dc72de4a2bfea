"""Vector math through glibc's libmvec: each call of a libm function in generated code is
tagged with its vector variant (the "vector-function-abi-variant" attribute), so LLVM's loop
vectorizer calls e.g. _ZGVeN16v_tanhf on 16 lanes instead of tanhf 16 times. llvmlite has
no `-vector-library` switch, so graphc adds the attribute itself (a rewrite of the IR text)."""
from __future__ import annotations

import functools
import re

import llvmlite.binding as llvm

# libm functions with libmvec variants on glibc >= 2.35 (exp/log/sin/cos since 2.22).
VECTORIZABLE = ("exp", "log", "sin", "cos", "tan", "tanh", "erf", "log1p")

_ISA = (("avx512f", "e", 16, 8), ("avx2", "d", 8, 4), ("sse2", "b", 4, 2))


@functools.lru_cache(maxsize=1)
def host_isa() -> tuple[str, int, int] | None:
    """(ISA letter, float lanes, double lanes) for the best vector ABI here, or None when
    libmvec is missing."""
    from graphc.backends.llvm.jit import load_system_library
    if not load_system_library("mvec", "libmvec.so.1"):
        return None
    features = llvm.get_host_cpu_features()
    for name, letter, f_lanes, d_lanes in _ISA:
        if features.get(name):
            return letter, f_lanes, d_lanes
    return None


def annotate(ir_text: str) -> str:
    """Tags scalar libm calls with their libmvec variants and marks libm declarations as
    pure (no errno writes are relied on), which the vectorizer needs."""
    isa = host_isa()
    extra: list[str] = []
    used: list[str] = []
    group = 1000
    for base in VECTORIZABLE:
        for scalar, ty, lanes in ((base + "f", "float", 1), (base, "double", 2)):
            decl = f'declare {ty} @"{scalar}"({ty} %".1")'
            if decl not in ir_text:
                continue
            ir_text = ir_text.replace(decl, f"{decl} #{group}")
            extra.append(f"attributes #{group} = {{ nounwind willreturn memory(none) }}")
            group += 1
            if isa is None:
                continue
            letter, f_lanes, d_lanes = isa
            n = f_lanes if lanes == 1 else d_lanes
            vector = f"_ZGV{letter}N{n}v_{scalar}"
            extra.append(f"declare <{n} x {ty}> @{vector}(<{n} x {ty}>)")
            extra.append(f'attributes #{group} = {{ "vector-function-abi-variant"='
                         f'"_ZGV{letter}N{n}v_{scalar}({vector})" }}')
            pattern = re.compile(rf'(call {ty} @"{scalar}"\({ty} [^)]*\))')
            ir_text = pattern.sub(rf"\1 #{group}", ir_text)
            used.append(f"ptr @{vector}")
            group += 1
    if used:
        extra.append(f"@llvm.compiler.used = appending global [{len(used)} x ptr] "
                     f"[{', '.join(used)}], section \"llvm.metadata\"")
    return ir_text + "\n" + "\n".join(extra) + "\n" if extra else ir_text
