"""gc.function: checks a program, optimizes it, hands it to a backend, checks every call."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from graphc import default_updates as _defaults
from graphc.backend import get_backend
from graphc.coerce import coerce_array
from graphc.graph import Graph
from graphc.node import Dim, Node
from graphc.ops.shapes import fmt_shape
from graphc.passes import select_passes
from graphc.program import Program
from graphc.size_binding import SizeBinder
from graphc.sizes import Size


def as_node(value: Any, what: str) -> Node:
    node = getattr(value, "node", value)
    if not isinstance(node, Node):
        raise TypeError(f"{what}: expected a graphc Tensor, got {type(value).__name__}")
    return node


def _check_inputs(inputs: Any) -> tuple[Node, ...]:
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(f"inputs: expected a list of placeholders, got {type(inputs).__name__}")
    nodes = tuple(as_node(x, f"inputs[{i}]") for i, x in enumerate(inputs))
    for i, n in enumerate(nodes):
        if n.op != "placeholder":
            raise TypeError(f"inputs[{i}]: expected a placeholder, got a {n.op} node")
    if len(set(nodes)) != len(nodes):
        raise ValueError("inputs: a placeholder is listed twice")
    return nodes


def _check_updates(updates: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None
                   ) -> tuple[tuple[Node, Node], ...]:
    if updates is None:
        return ()
    items = updates.items() if isinstance(updates, Mapping) else updates
    pairs = []
    for key, value in items:
        param = as_node(key, "updates key")
        if param.op != "parameter":
            raise TypeError(f"updates: key must be a parameter, got a {param.op} node")
        what = f"updates[{param.attrs['name']!r}]"
        new = as_node(value, what) if hasattr(value, "node") or isinstance(value, Node) else None
        if new is None:
            from graphc.ops.leaves import constant_node
            new = constant_node(coerce_array(value, param.dtype, what))
        if new.dtype != param.dtype:
            if new.dtype.kind != param.dtype.kind:
                raise TypeError(f"{what}: new value has dtype {new.dtype}, parameter has "
                                f"{param.dtype}")
            from graphc.ops import make
            new = make("cast", new, dtype=param.dtype)
        if new.shape != param.shape:
            if len(new.shape) != len(param.shape) or any(
                    isinstance(d, int) and d != p for d, p in zip(new.shape, param.shape)):
                raise ValueError(f"{what}: new value has shape {fmt_shape(new.shape)}, "
                                 f"parameter has {fmt_shape(param.shape)}")
        pairs.append((param, new))
    if len({p for p, _ in pairs}) != len(pairs):
        raise ValueError("updates: a parameter is updated twice")
    return tuple(pairs)


def _captured_by(missing: list[Node], nodes: list[Node]) -> str:
    """Where a loop body reads the missing placeholders (a scan captured them)."""
    lines = {str(n.source) for n in nodes if n.op == "scan" and n.source is not None
             and any(i in missing for i in n.inputs)}
    return f" (read in the body of the scan built at {', '.join(sorted(lines))})" \
        if lines else ""


class Function:
    """A compiled program: call it with arrays, get arrays back; parameters update in place."""

    def __init__(self, inputs: Sequence[Any], outputs: Any, updates: Mapping | None = None,
                 backend: str = "llvm", optimize: bool | str | Iterable[str] = True,
                 backend_options: Mapping[str, Any] | None = None,
                 default_updates: bool = True) -> None:
        self.inputs = _check_inputs(inputs)
        self._single = not isinstance(outputs, (list, tuple))
        self._out_type = None if self._single else type(outputs)
        outs = [outputs] if self._single else list(outputs)
        out_nodes = tuple(as_node(o, f"outputs[{i}]") for i, o in enumerate(outs))
        explicit = _check_updates(updates)
        if not isinstance(default_updates, bool):
            raise TypeError(f"default_updates: expected True or False, got {default_updates!r}")
        implied: tuple[tuple[Node, Node], ...] = ()
        if default_updates:  # e.g. BatchNorm's running statistics, for a training-mode call
            roots = out_nodes + tuple(v for _, v in explicit)
            implied = _check_updates(_defaults.collect(roots, [p for p, _ in explicit]))
        # The names of the parameters updated by default (not named in `updates`).
        self.default_updates = tuple(p.attrs["name"] for p, _ in implied)
        raw = Graph(self.inputs, out_nodes, explicit + implied)
        nodes = raw.nodes()
        missing = [n for n in nodes if n.op == "placeholder" and n not in self.inputs]
        if missing:
            names = ", ".join(repr(n.attrs["name"]) for n in missing)
            raise ValueError(f"outputs depend on placeholder(s) {names} not listed in "
                             f"inputs{_captured_by(missing, nodes)}")
        self.backend = backend
        self.passes = select_passes(optimize)
        self.raw_graph = raw
        # The backend gets the raw program: one with code in its disk cache never optimizes.
        self.program = Program(raw, self.passes)
        options = dict(backend_options or {})
        if not self.passes:  # kernels are planned per shape later: tell them to stay raw too
            options.setdefault("optimize", False)
        self._backend = get_backend(backend)
        self._exe = self._backend.compile(self.program, options)
        from graphc.distributed.guard import wrap  # a step of an MPI job (issue #19)
        self._exe = wrap(self._exe, raw)
        self._storages = sorted({p.attrs["storage"] for p in raw.parameters()},
                                key=lambda s: s.uid)
        self._locks = [s.lock for s in self._storages]
        self._fixed = {p: [(i, d) for i, d in enumerate(p.shape) if isinstance(d, int)]
                       for p in self.inputs}
        binder = SizeBinder(self.inputs, raw.roots)
        self._binder = None if binder.trivial else binder

    @property
    def pass_names(self) -> tuple[str, ...]:
        return tuple(self.passes)

    @property
    def graph(self) -> Graph:
        """The optimized program (the passes run on first use)."""
        return self.program.graph

    @property
    def report(self):
        """What each optimization pass did: print it, or f.report.table() for the text."""
        return self.program.report

    @property
    def source(self) -> str:
        """The generated code: LLVM IR (llvm), the graph listing or kernel plan (numpy)."""
        return self._exe.source

    @property
    def asm(self) -> str:
        """Machine code text (llvm backend)."""
        asm = getattr(self._exe, "asm", None)
        if asm is None:
            raise AttributeError(f"the {self.backend} backend produces no machine code")
        return asm

    @property
    def ptx(self) -> str:
        """The PTX the generated CUDA C compiles to (cuda backend; no GPU needed)."""
        ptx = getattr(self._exe, "ptx", None)
        if ptx is None:
            raise AttributeError(f"the {self.backend} backend produces no PTX")
        return ptx

    @property
    def compile_times(self) -> dict:
        """Where the last compile went (llvm backend), in seconds: "fingerprint",
        "optimize and schedule", "codegen" (writing the IR), "llvm parse", "llvm optimize",
        "llvm emit" (each summed over the parts, which compile side by side), "parts" (a
        count) and "parts wall" (their time end to end), and counts of kernels: "kernels",
        "kernels distinct" (identical kernels share one function), "kernels compiled" and
        "kernels loaded" (from the per-kernel cache); or "cache load" when the whole
        program came from the disk cache ("cached": True). Empty before the first
        compile."""
        times = getattr(self._exe, "compile_times", None)
        if times is None:
            raise AttributeError(f"the {self.backend} backend reports no compile times")
        return dict(times)

    def schedule(self, *shapes: tuple[int, ...]):
        """The kernel plan for these input shapes (default: the inputs' static shapes);
        print it with .listing()."""
        from graphc.schedule import schedule_graph
        given: Sequence[tuple[Dim, ...]] = shapes
        if not given:
            given = tuple(p.shape for p in self.inputs)
        if len(given) != len(self.inputs):
            raise TypeError(f"schedule: expected {len(self.inputs)} shapes, got {len(given)}")
        for ph, shape in zip(self.inputs, given):
            if not isinstance(shape, (tuple, list)) or not all(
                    d is None or isinstance(d, Size) or (isinstance(d, (int, np.integer))
                                                         and d >= 0) for d in shape):
                raise TypeError(f"schedule: the shape for {ph.attrs['name']!r} must be a tuple "
                                f"of sizes (one per input, in order), got {shape!r}")
        given = [tuple(p if d is None else d for d, p in zip(s, ph.shape))
                 for s, ph in zip(given, self.inputs)]
        return schedule_graph(self.graph, given,
                              policy=self._backend.policy)

    def _convert(self, args: Sequence[Any]) -> list[np.ndarray]:
        if len(args) != len(self.inputs):
            names = ", ".join(repr(p.attrs["name"]) for p in self.inputs)
            raise TypeError(f"expected {len(self.inputs)} arguments ({names}), "
                            f"got {len(args)}")
        arrays = []
        for ph, arg in zip(self.inputs, args):
            if type(arg) is np.ndarray and arg.dtype == ph.dtype:  # the common case, fast
                shape = arg.shape
                if len(shape) == ph.ndim and all(shape[i] == d for i, d in self._fixed[ph]):
                    arrays.append(arg)
                    continue
            what = f"argument {ph.attrs['name']!r}"
            if self.backend == "cuda" and hasattr(arg, "__cuda_array_interface__"):
                # a device array (CuPy) stays on the device: its dtype must be exact
                if np.dtype(arg.dtype) != ph.dtype:
                    raise TypeError(f"{what}: expected {ph.dtype} data, got {arg.dtype} "
                                    "(a device array is not converted)")
                array = arg
            else:
                array = coerce_array(arg, ph.dtype, what)
            if array.ndim != ph.ndim or any(isinstance(d, int) and d != a
                                            for d, a in zip(ph.shape, array.shape)):
                raise ValueError(f"{what}: expected shape {fmt_shape(ph.shape)}, got "
                                 f"{fmt_shape(array.shape)}")
            arrays.append(array)
        if self._binder is not None:
            self._binder.bind([a.shape for a in arrays])
        return arrays

    def __call__(self, *args: Any) -> Any:
        arrays = self._convert(args)
        locks = self._locks
        for lock in locks:  # in uid order, so two functions never deadlock
            lock.acquire()
        try:
            outs = self._exe.run(arrays)
        finally:
            for lock in locks:
                lock.release()
        if self._single:
            return outs[0]
        return self._out_type(outs) if self._out_type is tuple else list(outs)

    def __reduce__(self):
        raise TypeError(
            "a compiled graphc Function cannot be pickled (it holds native code and the live "
            "buffers of its parameters): save the parameter values instead (p.value for each "
            "of module.parameters(), e.g. with np.savez), and in the other process build the "
            "graph again and call gc.function (compiled code comes from the disk cache)")

    def __repr__(self) -> str:
        names = ", ".join(p.attrs["name"] for p in self.inputs)
        return f"<graphc.Function ({names}) -> {len(self.raw_graph.outputs)} outputs, " \
               f"{len(self.raw_graph.updates)} updates, backend={self.backend!r}>"

    # Notebook views (issue #17, pictures): raw and optimized graphs side by side, as SVG.
    def _repr_svg_(self) -> str | None:
        from graphc.render import svg_text
        return svg_text(self)

    def _repr_html_(self) -> str | None:
        from graphc.render import html_view
        return html_view(self)


def function(inputs: Sequence[Any], outputs: Any, updates: Mapping | None = None,
             backend: str = "llvm", optimize: bool | str | Iterable[str] = True,
             backend_options: Mapping[str, Any] | None = None,
             default_updates: bool = True) -> Function:
    """Compiles `outputs` (and parameter `updates`) as a function of the `inputs`.
    backend_options: settings for the backend (numpy: mode="graph" or "kernels"; llvm:
    sizes="auto", the default, one compiled program for every size known only at call
    time, or "symbolic", or "specialize", a program per input shapes; docs/sizes.md).
    default_updates: also apply the state updates that nodes in the graph imply (a
    training-mode BatchNorm's running statistics, Dropout's seed; see
    graphc.default_updates), except for parameters that `updates` names; False: none
    (e.g. to evaluate a training-mode loss without touching the statistics).
    `f.default_updates` lists the parameters so updated."""
    return Function(inputs, outputs, updates, backend, optimize, backend_options,
                    default_updates)
