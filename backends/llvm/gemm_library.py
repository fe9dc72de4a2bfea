"""The packed GEMM path's shared functions (micro-kernels, packing, transposes, work and team
bodies, dot-product parts: gemm_kernels.py, gemm_dot.py, gemm_dot_pairs.py) split from the
program's own GEMM functions, so that each is compiled and cached apart, under a key of its
own code (kernel_cache.library_key): a program whose GEMMs differ from another's by one
loads these from the cache and compiles only its drivers (the g<digest>_gemm functions).

They are ~90 % of a GEMM unit's IR (W6: ~300K of ~338K characters) and depend on nothing
of the program: no global of it, no function of it. A shared function that did (a check
here, not an assumption) stays in the drivers' module. In the drivers' module they are
declared; in the library's they are defined with external linkage, so that objects built
apart link in one engine (jit.load_objects).

Each function becomes a Piece: its definition, the declarations it needs and its metadata
(loop IDs), renumbered from !0 so that the text is the same in every program whatever the
module's numbering was. Their module goes through LLVM's O1 middle end (jit.O1): their
steps ran as fast as at O3 (W1, W6, docs/llvm-backend.md), for a sixth less of its time."""
from __future__ import annotations

import re
from dataclasses import dataclass

from llvmlite import ir

from graphc.backends.llvm import jit

# The names of the shared functions (the program's own are g<digest>_<kind>...)
PREFIXES = ("gemm_",)

_REF = re.compile(r'@(?:"([^"]+)"|([\w.$-]+))')
_MD = re.compile(r"!(?<![\w\"]!)(\d+)\b")  # (the literal first: scanned for fast)
_MD_LINE = re.compile(r"^!(\d+) = (.*)$", re.M)


@dataclass(frozen=True)
class Piece:
    """One shared function as a module fragment: declarations of what it calls, its
    definition (external) and its metadata (numbered from !0)."""

    name: str
    declarations: tuple[tuple[str, str], ...]  # (name, text)
    body: str
    metadata: tuple[str, ...]  # the lines !0 = ..., !1 = ...

    @property
    def text(self) -> str:
        """Everything that makes its code (what its cache key is made from)."""
        return "\n".join([t for _, t in self.declarations] + [self.body]
                         + list(self.metadata))


def _refs(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for quoted, plain in _REF.findall(text):
        seen.setdefault(quoted or plain)
    return list(seen)


def _declaration(fn: ir.Function) -> str:
    """`fn` as a declaration (external), whether or not this module defines it."""
    blocks, linkage = fn.blocks, fn.linkage
    fn.blocks, fn.linkage = [], ""
    try:
        return str(fn).strip()
    finally:
        fn.blocks, fn.linkage = blocks, linkage


def _library_functions(module: ir.Module, texts: dict[str, str]) -> set[str]:
    """The shared functions that can live apart: those that reach only each other and
    declarations (never a global or a function of the program)."""
    names = set(texts)
    changed = True
    while changed:
        changed = False
        for name in sorted(names):
            for ref in _refs(texts[name]):
                if ref == name or ref in names:
                    continue
                value = module.globals.get(ref)
                if not (isinstance(value, ir.Function) and value.is_declaration):
                    names.discard(name)
                    changed = True
                    break
    return names


def split(module: ir.Module, annotate) -> tuple[str, list[Piece]]:
    """The drivers' module text (each shared function declared; `annotate`: the text's
    final rewrite, vector_abi.annotate) and the shared functions as pieces."""
    defined = {f.name: f for f in module.functions if not f.is_declaration}
    texts = {name: str(fn) for name, fn in defined.items() if name.startswith(PREFIXES)}
    library = _library_functions(module, texts)
    saved = [(defined[n], defined[n].blocks, defined[n].linkage) for n in sorted(library)]
    for fn, _, _ in saved:
        fn.blocks, fn.linkage = [], ""
    try:
        drivers = annotate(str(module))
    finally:
        for fn, blocks, linkage in saved:
            fn.blocks, fn.linkage = blocks, linkage
    lines = dict(_MD_LINE.findall(drivers))
    pieces = []
    for name in sorted(library):
        text = texts[name]
        declarations = tuple((ref, _declaration(module.globals[ref]))
                             for ref in _refs(text) if ref != name)
        body = text.replace("define internal ", "define ", 1).strip()
        pieces.append(_piece(name, declarations, body, lines))
    return drivers, pieces


def _piece(name: str, declarations: tuple[tuple[str, str], ...], body: str,
           lines: dict[str, str]) -> Piece:
    """A piece with the metadata its body reaches (transitively), renumbered from !0 in
    the order first reached."""
    number: dict[str, int] = {}
    queue = [m for m in _MD.findall(body)]
    while queue:
        old = queue.pop(0)
        if old in number:
            continue
        number[old] = len(number)
        queue += _MD.findall(lines[old])

    def renumber(text: str) -> str:
        return _MD.sub(lambda m: f"!{number[m.group(1)]}", text)

    metadata = tuple(f"!{new} = {renumber(lines[old])}" for old, new in number.items())
    return Piece(name, declarations, renumber(body), metadata)


def module_text(pieces: list[Piece], annotate) -> str:
    """One module defining `pieces` (each declaration once, none of a function defined
    here; each piece's metadata moved past the ones before)."""
    defined = {p.name for p in pieces}
    declarations: dict[str, str] = {}
    for p in pieces:
        for ref, text in p.declarations:
            if ref not in defined:
                declarations.setdefault(ref, text)
    bodies, metadata, offset = [], [], 0
    for p in pieces:
        def shift(m: re.Match, by: int = offset) -> str:
            return f"!{int(m.group(1)) + by}"
        bodies.append(_MD.sub(shift, p.body))
        metadata += [_MD.sub(shift, line) for line in p.metadata]
        offset += len(p.metadata)
    return jit.O1 + annotate("\n\n".join(list(declarations.values()) + bodies + metadata)
                             + "\n")
