"""`graphc compile`: the code a backend generates for a function (IR, assembly, listing)."""
from __future__ import annotations

import argparse
from typing import Any

from graphc.cli.errors import CLIError
from graphc.cli.target import load_target
from graphc.function import Function, function
from graphc.graph import Graph
from graphc.node import Node, toposort

BACKENDS = ("numpy", "llvm", "cuda")
EMITS = ("ir", "asm", "listing", "cuda", "ptx")


def _options(backend: str) -> dict[str, Any]:
    """The cuda backend without a GPU renders and compiles through its emulator."""
    if backend != "cuda":
        return {}
    from graphc.backends.cuda.backend import gpu_problem
    return {"emulate": True} if gpu_problem() else {}


def _placeholders(roots: tuple[Node, ...]) -> list[Node]:
    return [n for n in toposort(roots) if n.op == "placeholder"]


def as_function(target: Any, backend: str | None) -> Function:
    """A compiled function for `target` (a Function is recompiled only for another backend);
    tensors and graphs take their placeholders as inputs, in the order they are reached."""
    if isinstance(target, Function):
        if backend is None or backend == target.backend:
            return target
        graph = target.raw_graph
        return function(list(graph.inputs), list(graph.outputs), dict(graph.updates),
                        backend=backend, optimize=target.passes or False,
                        default_updates=False, backend_options=_options(backend))
    chosen = backend or "llvm"
    if isinstance(target, Graph):
        inputs = list(target.inputs) or _placeholders(target.roots)
        return function(inputs, list(target.outputs), dict(target.updates), backend=chosen,
                        backend_options=_options(chosen))
    outputs = target if isinstance(target, list) else [target]
    roots = tuple(t.node for t in outputs)
    return function(_placeholders(roots), outputs, backend=chosen,
                    backend_options=_options(chosen))


def emit(f: Function, what: str) -> str:
    symbolic = any(not isinstance(d, int) for p in f.inputs for d in p.shape)
    if what in ("ir", "cuda", "ptx") and f.backend == "cuda" and symbolic:
        raise CLIError(f"--emit {what}: the inputs have sizes known only at call time (the "
                       "cuda backend renders a program per input shapes)")
    if what in ("ir", "cuda"):
        return f.source
    if what == "ptx":
        from graphc.backends.cuda.ptx import available
        if not available():
            raise CLIError("--emit ptx: neither NVRTC (pip install nvidia-cuda-nvrtc) nor "
                           "nvcc was found")
        return f.ptx
    if what == "asm":
        if f.backend != "llvm":
            raise CLIError(f"--emit asm: the {f.backend} backend produces no machine code "
                           f"(use --backend llvm)")
        return f.asm
    if symbolic:
        raise CLIError("--emit listing: the inputs have sizes known only at call time "
                       "(the kernel plan is made per input shapes)")
    return f.schedule().listing()


def run(args: argparse.Namespace) -> str:
    backend = args.backend
    if args.emit in ("cuda", "ptx"):
        if backend not in (None, "cuda"):
            raise CLIError(f"--emit {args.emit} is the cuda backend's code: drop --backend "
                           f"{backend} or give --backend cuda")
        backend = "cuda"
    target = load_target(args.target)
    return emit(as_function(target, backend), args.emit)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compile", help="print the code generated for a function",
                       description="Compile FILE.py:NAME (a gc.Function, or tensors whose "
                                   "placeholders become the inputs) and print its code.")
    p.add_argument("target", metavar="FILE.py:NAME")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="default: the function's own backend, llvm for tensors")
    p.add_argument("--emit", choices=EMITS, required=True,
                   help="ir: f.source (LLVM IR; the numpy backend's plan; CUDA C); asm: "
                        "machine code (llvm); listing: the kernel listing; cuda: the CUDA C "
                        "and ptx: its PTX (the cuda backend, emulated without a GPU)")
    p.set_defaults(run=run)
