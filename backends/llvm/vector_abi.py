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
    isas = host_isas()
    return isas[0] if isas else None


@functools.lru_cache(maxsize=1)
def host_isas() -> tuple[tuple[str, int, int], ...]:
    """The vector ABIs the loop vectorizer may call here, widest first: the best one and,
    from AVX2 on, the AVX2 one too. LLVM's vectorizer uses the variant of the width it
    chose, and on Intel's AVX-512 cores it prefers 256-bit vectors: with the 512-bit
    variant alone it called the scalar function (exp over 1M floats 10x slower)."""
    from graphc.backends.llvm.jit import load_system_library
    if not load_system_library("mvec", "libmvec.so.1"):
        return ()
    features = llvm.get_host_cpu_features()
    found = [(letter, f_lanes, d_lanes) for name, letter, f_lanes, d_lanes in _ISA
             if features.get(name)]
    if not found:
        return ()
    # (an SSE variant from AVX code would pay for the switch between the two encodings)
    return tuple(found[:2]) if found[0][0] == "e" else tuple(found[:1])


def annotate(ir_text: str) -> str:
    """Tags scalar libm calls with their libmvec variants and marks libm declarations as
    pure (no errno writes are relied on), which the vectorizer needs."""
    isas = host_isas()
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
            if not isas:
                continue
            variants = []
            for letter, f_lanes, d_lanes in isas:
                n = f_lanes if lanes == 1 else d_lanes
                vector = f"_ZGV{letter}N{n}v_{scalar}"
                extra.append(f"declare <{n} x {ty}> @{vector}(<{n} x {ty}>)")
                variants.append(f"{vector}({vector})")
                used.append(f"ptr @{vector}")
            extra.append(f'attributes #{group} = {{ "vector-function-abi-variant"='
                         f'"{",".join(variants)}" }}')
            pattern = re.compile(rf'(call {ty} @"{scalar}"\({ty} [^)]*\))')
            ir_text = pattern.sub(rf"\1 #{group}", ir_text)
            group += 1
    if used:
        extra.append(f"@llvm.compiler.used = appending global [{len(used)} x ptr] "
                     f"[{', '.join(used)}], section \"llvm.metadata\"")
    return ir_text + "\n" + "\n".join(extra) + "\n" if extra else ir_text
