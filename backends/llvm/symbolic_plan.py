"""What a symbolic program needs to plan each binding of its sizes, as a record that the disk
cache stores in JSON next to the code (never pickle): the temporaries' sizes as expressions
and their lifetimes, each kernel's table recipe and size symbols, its GEMM blocking inputs,
the outputs and the error messages. A warm start reads it back and never schedules again."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from graphc import sizes
from graphc.runtime.layout import decode_const, encode_consts, index_arguments
from graphc.schedule import ir as kir
from graphc.schedule.memory import MemoryPlan, plan_memory

# Bumped with any change of the encoding: an entry of another version is a cache miss.
# 2: a GEMM's implicit B (its sub-axes: a convolution over a call-time batch); 3: a loop's
# vector (its body kernels' symbols and GEMM blocking)
VERSION = 3


class PlanFormatError(ValueError):
    """A stored plan that does not fit this program or this version (a cache miss)."""


@dataclass(frozen=True)
class KernelRecipe:
    """One kernel's part of the entry's table: its buffers (a slot, or -1 - buffer id for a
    temporary in the arena), whether its status is checked, its size symbols (by number in
    the plan's symbol table) and, for a symbolic packed GEMM, its blocking inputs."""

    refs: tuple[int, ...]
    can_fail: bool
    symbols: tuple[int, ...]
    gemm: Any = None  # gemm.RuntimeGemm or None


@dataclass(frozen=True)
class ErrorRecipe:
    """A failing kernel's message, or the parts of an IndexError's (size as an expression)."""

    message: str
    size: sizes.Dim | None = None
    negative: bool = False


@dataclass
class SymbolicPlan:
    symbols: list[sizes.SizeVar]
    slot_count: int
    arena_slot: int
    input_slots: list[int]
    outputs: list[tuple[int, tuple[sizes.Dim, ...], str]]  # (slot, shape, dtype)
    params: list[tuple[int, int]]  # (slot, the parameter's number in the fingerprint)
    consts: list[tuple[int, np.ndarray]]
    temps: dict[int, tuple[tuple[sizes.Dim, ...], str]]  # id -> (shape, dtype)
    spans: dict[int, tuple[int, int]]
    kernels: list[KernelRecipe]
    errors: dict[int, ErrorRecipe]
    index_args: dict[int, tuple[int, sizes.Dim, bool]]
    value_errors: list[int]
    team_flags: list[str]

    # -- made from a schedule ---------------------------------------------------------------
    @staticmethod
    def of(schedule: kir.Schedule, slots, units, storages: Sequence, spans: dict,
           gemms: Mapping[int, Any], team_flags: Sequence[str]) -> "SymbolicPlan":
        """`units`: codegen.plan_units(schedule); `gemms`: kernel -> gemm.RuntimeGemm for the
        symbolic GEMMs; `storages`: the parameters in fingerprint order."""
        symbols: list[sizes.SizeVar] = []
        number: dict[sizes.SizeVar, int] = {}

        def sym(v: sizes.SizeVar) -> int:
            if v not in number:
                number[v] = len(symbols)
                symbols.append(v)
            return number[v]

        kernels = []
        for i, k in enumerate(schedule.kernels):
            refs = tuple(-1 - b if schedule.buffers[b].role == "temp" else slots.slot[b]
                         for b in units.buffers[i])
            kernels.append(KernelRecipe(refs, bool(k.can_fail),
                                        tuple(sym(v) for v in units.symbols[i]),
                                        gemms.get(i)))
        errors = {}
        for i, k in enumerate(schedule.kernels):
            error = k.error()
            if error is None:
                continue
            checked = k.checked_indices()
            if isinstance(k, kir.Loop):  # one failing body kernel: its size, per binding
                failing = k.failing()
                if len(failing) == 1 and failing[0].checked_indices() is not None:
                    error = failing[0].error() or error
                    checked = failing[0].checked_indices()
            errors[i] = ErrorRecipe(error[1]) if checked is None else \
                ErrorRecipe(error[1], checked[2], bool(checked[3]))
        messages = {i: e.message for i, e in errors.items()}
        storage_number = {id(st): n for n, st in enumerate(storages)}
        return SymbolicPlan(
            symbols=symbols, slot_count=slots.count, arena_slot=slots.arena_slot,
            input_slots=[slots.slot[b] for b in schedule.inputs],
            outputs=[(slots.slot[b], tuple(schedule.buffers[b].shape),
                      np.dtype(schedule.buffers[b].dtype).str) for b in schedule.outputs],
            params=[(slots.slot[b], storage_number[id(st)])
                    for b, st in schedule.params.items()],
            consts=[(slots.slot[b], np.ascontiguousarray(a))
                    for b, a in schedule.consts.items()],
            temps={b.id: (tuple(b.shape), np.dtype(b.dtype).str)
                   for b in schedule.buffers.values() if b.role == "temp" and b.id in spans},
            spans={b: spans[b] for b in spans
                   if schedule.buffers[b].role == "temp"},
            kernels=kernels, errors=errors,
            index_args=dict(index_arguments(schedule, messages).items()),
            value_errors=[i for i, k in enumerate(schedule.kernels)
                          if k.can_fail and (k.error() or (None,))[0] is ValueError],
            team_flags=list(team_flags))

    # -- per binding ------------------------------------------------------------------------
    def memory(self, values: Mapping[sizes.SizeVar, int]) -> MemoryPlan:
        """The binding's memory plan (the same greedy placement as a schedule's)."""
        buffers = {bid: kir.Buffer(bid, np.dtype(dtype),
                                   tuple(sizes.evaluate(d, values) for d in shape), "temp")
                   for bid, (shape, dtype) in self.temps.items()}
        return plan_memory(_Buffers(buffers), self.spans)

    def descriptor(self, offsets: Mapping[int, int], extra: Sequence[int | None]) -> list[int]:
        """The entry's table (see entry.descriptor) for one binding's arena offsets."""
        desc: list[int] = []
        for recipe, more in zip(self.kernels, extra):
            desc += [len(recipe.refs) + (more is not None), int(recipe.can_fail)]
            desc += [-1 - offsets.get(-1 - r, 0) if r < 0 else r for r in recipe.refs]
            if more is not None:
                desc.append(-1 - more)
        return desc

    # -- JSON -------------------------------------------------------------------------------
    def to_meta(self, inputs: Sequence) -> tuple[dict, bytes]:
        """JSON-able metadata and the constants' bytes. Symbols are written as the (input,
        axis) whose size gives them, so a fresh process maps them to its own placeholders."""
        where = symbol_places(inputs)
        try:
            table = [list(where[v]) for v in self.symbols]
        except KeyError as e:
            raise PlanFormatError(f"size {e} is not an input's size") from None
        number = {v: i for i, v in enumerate(self.symbols)}

        def dim(d: sizes.Dim) -> Any:
            return encode_dim(d, number)

        consts, blob = encode_consts(self.consts)
        meta = {
            "version": VERSION, "symbols": table, "slot_count": self.slot_count,
            "arena_slot": self.arena_slot, "input_slots": self.input_slots,
            "outputs": [[s, [dim(d) for d in sh], dt] for s, sh, dt in self.outputs],
            "params": [list(p) for p in self.params], "consts": consts,
            "temps": [[b, [dim(d) for d in sh], dt] for b, (sh, dt) in self.temps.items()],
            "spans": [[b, lo, hi] for b, (lo, hi) in self.spans.items()],
            "kernels": [[list(k.refs), k.can_fail, list(k.symbols),
                         None if k.gemm is None else _gemm_meta(k.gemm, dim)]
                        for k in self.kernels],
            "errors": [[i, e.message, None if e.size is None else dim(e.size), e.negative]
                       for i, e in self.errors.items()],
            "index_args": [[i, p, dim(n), neg] for i, (p, n, neg) in self.index_args.items()],
            "value_errors": self.value_errors, "team_flags": self.team_flags}
        return meta, blob

    @staticmethod
    def from_meta(meta: Any, blob: bytes, inputs: Sequence, parameters: int) -> "SymbolicPlan":
        """The plan stored by to_meta, checked against this program (`inputs`: its
        placeholders, `parameters`: how many it holds). PlanFormatError where it does not
        fit: another version, a damaged or foreign entry."""
        try:
            return _decode(meta, blob, inputs, parameters)
        except PlanFormatError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise PlanFormatError(f"a stored plan that cannot be read: {type(e).__name__}: "
                                  f"{e}") from None


class _Buffers:
    """What plan_memory reads of a schedule: its buffers."""

    def __init__(self, buffers: dict[int, kir.Buffer]) -> None:
        self.buffers = buffers


def symbol_places(inputs: Sequence) -> dict[sizes.SizeVar, tuple[int, int]]:
    where: dict[sizes.SizeVar, tuple[int, int]] = {}
    for i, p in enumerate(inputs):
        for axis, d in enumerate(p.shape):
            if isinstance(d, sizes.Size) and d.is_var():
                (var,) = d.atoms()
                where.setdefault(var, (i, axis))
    return where


def encode_dim(d: sizes.Dim, number: Mapping[sizes.SizeVar, int]) -> Any:
    """A size as JSON: an int, or {"p": [[atoms, coefficient], ...]} where an atom is a
    symbol's number or [kind, args] for floordiv/min/max/isqrt."""
    if isinstance(d, bool) or not isinstance(d, (int, sizes.Size)):
        raise PlanFormatError(f"not a size: {d!r}")
    if isinstance(d, int):
        return d

    def atom(a: Any) -> Any:
        if isinstance(a, sizes.SizeVar):
            return number[a]
        return [a.kind, [encode_dim(x, number) for x in a.args]]
    return {"p": [[[atom(a) for a in mono], c] for mono, c in d.terms]}


_FUNCS: dict[str, Callable[..., sizes.Dim]] = {
    "floordiv": sizes.floordiv, "min": sizes.minimum, "max": sizes.maximum,
    "isqrt": sizes.isqrt}


def decode_dim(x: Any, symbols: Sequence[sizes.Dim]) -> sizes.Dim:
    """The size encode_dim wrote, with `symbols` for the symbol numbers."""
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    if not isinstance(x, dict) or set(x) != {"p"}:
        raise PlanFormatError(f"not an encoded size: {x!r}")
    total: sizes.Dim = 0
    for mono, c in x["p"]:
        if isinstance(c, bool) or not isinstance(c, int):
            raise PlanFormatError(f"not a coefficient: {c!r}")
        term: sizes.Dim = c
        for a in mono:
            if isinstance(a, int) and not isinstance(a, bool):
                if not 0 <= a < len(symbols):
                    raise PlanFormatError(f"symbol {a} out of range")
                value = symbols[a]
            else:
                kind, args = a
                value = _FUNCS[kind](*[decode_dim(y, symbols) for y in args])
            term = sizes.mul(term, value)
        total = sizes.add(total, term)
    return total


def _gemm_meta(g: Any, dim: Any) -> dict:
    """A kernel's words after its symbols: a packed GEMM's blocking inputs, or a loop's
    parts (each body kernel's symbols and its own words, loop_vector.LoopTail)."""
    from graphc.backends.llvm.loop_vector import LoopTail
    if isinstance(g, LoopTail):
        return {"loop": [g.own, [[j, [dim(sizes.Size.of(v)) for v in symbols],
                                  None if sub is None else _gemm_meta(sub, dim)]
                                 for j, symbols, sub in g.parts]]}
    spec = g.spec

    def operand(o: Any) -> list:
        return [o.buffer, [dim(d) for d in o.batch], dim(o.s0), dim(o.s1), dim(o.offset)]
    return {"spec": [spec.dtype, [dim(d) for d in spec.batch], dim(spec.m), dim(spec.n),
                     dim(spec.k), operand(spec.a), operand(spec.b), operand(spec.c),
                     spec.alpha, spec.accumulate],
            "team": g.team, "layouts": list(g.layouts),
            "b_sub": None if spec.b_sub is None else
            [[[dim(d), dim(st)] for d, st in axes] for axes in spec.b_sub]}


def _gemm_of(meta: Any, dim: Any) -> Any:
    from graphc.backends.llvm import gemm
    if "loop" in meta:
        from graphc.backends.llvm.loop_vector import LoopTail
        own, parts = meta["loop"]
        return LoopTail(_int(own), [(_int(j), tuple(_symbol(dim(x)) for x in symbols),
                                     None if sub is None else _gemm_of(sub, dim))
                                    for j, symbols, sub in parts])
    dtype, batch, m, n, k, a, b, c, alpha, accumulate = meta["spec"]

    def operand(o: Any) -> Any:
        buffer, obatch, s0, s1, offset = o
        return gemm._Operand(int(buffer), tuple(dim(d) for d in obatch), dim(s0), dim(s1),
                             dim(offset))
    if dtype not in gemm.PARAMS:
        raise PlanFormatError(f"no GEMM blocking for {dtype!r}")
    sub = meta.get("b_sub")
    b_sub = None
    if sub is not None:
        if not (isinstance(sub, list) and len(sub) == 2):
            raise PlanFormatError("an implicit B needs the sub-axes of k and of n")
        k_axes, n_axes = (tuple((dim(d), dim(st)) for d, st in axes) for axes in sub)
        b_sub = (k_axes, n_axes)
    spec = gemm._Spec(str(dtype), tuple(dim(d) for d in batch), dim(m), dim(n), dim(k),
                      operand(a), operand(b), operand(c), float(alpha), bool(accumulate),
                      b_sub)
    layouts = tuple(str(s) for s in meta["layouts"])
    if len(layouts) != 2:
        raise PlanFormatError("a GEMM needs two layouts")
    return gemm.RuntimeGemm.restored(spec, int(meta["team"]), (layouts[0], layouts[1]))


def _decode(meta: Any, blob: bytes, inputs: Sequence, parameters: int) -> SymbolicPlan:
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        raise PlanFormatError(f"a plan of another version ({meta.get('version')!r}, this is "
                              f"{VERSION})" if isinstance(meta, dict) else "no plan")
    symbols: list[sizes.Dim] = []
    for i, axis in meta["symbols"]:
        d = inputs[int(i)].shape[int(axis)]
        if not (isinstance(d, sizes.Size) and d.is_var()):
            raise PlanFormatError(f"input {i} axis {axis} is not a size known at call time")
        symbols.append(d)
    variables = [next(iter(d.atoms())) for d in symbols if isinstance(d, sizes.Size)]

    def dim(x: Any) -> sizes.Dim:
        return decode_dim(x, symbols)

    def ints(xs: Any) -> list[int]:
        return [_int(x) for x in xs]

    slot_count, arena_slot = _int(meta["slot_count"]), _int(meta["arena_slot"])
    consts = []
    for slot, dtype, shape, offset, nbytes in meta["consts"]:
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise PlanFormatError("a constant of object dtype")
        consts.append((_int(slot), decode_const(blob, dt, ints(shape), offset, nbytes)))
    plan = SymbolicPlan(
        symbols=variables, slot_count=slot_count, arena_slot=arena_slot,
        input_slots=ints(meta["input_slots"]),
        outputs=[(_int(s), tuple(dim(d) for d in sh), str(np.dtype(dt).str))
                 for s, sh, dt in meta["outputs"]],
        params=[(_int(s), _int(n)) for s, n in meta["params"]], consts=consts,
        temps={_int(b): (tuple(dim(d) for d in sh), str(np.dtype(dt).str))
               for b, sh, dt in meta["temps"]},
        spans={_int(b): (_int(lo), _int(hi)) for b, lo, hi in meta["spans"]},
        kernels=[KernelRecipe(tuple(ints(refs)), bool(fail), tuple(ints(syms)),
                              None if g is None else _gemm_of(g, dim))
                 for refs, fail, syms, g in meta["kernels"]],
        errors={_int(i): ErrorRecipe(str(m), None if n is None else dim(n), bool(neg))
                for i, m, n, neg in meta["errors"]},
        index_args={_int(i): (_int(p), dim(n), bool(neg))
                    for i, p, n, neg in meta["index_args"]},
        value_errors=ints(meta["value_errors"]),
        team_flags=[str(f) for f in meta["team_flags"]])
    _check(plan, len(inputs), parameters)
    return plan


def _symbol(d: sizes.Dim) -> sizes.SizeVar:
    if not (isinstance(d, sizes.Size) and d.is_var()):
        raise PlanFormatError(f"not a symbol: {d}")
    return next(iter(d.atoms()))


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise PlanFormatError(f"not an int: {x!r}")
    return x


def _check(plan: SymbolicPlan, inputs: int, parameters: int) -> None:
    """Slots in range and distinct, table entries pointing at slots or planned temporaries,
    symbols in range: what native code trusts when it writes."""
    fixed = plan.input_slots + [s for s, _, _ in plan.outputs] + \
        [s for s, _ in plan.params] + [s for s, _ in plan.consts]
    ok = (0 <= plan.arena_slot < plan.slot_count == plan.arena_slot + 1
          and all(0 <= s < plan.arena_slot for s in fixed) and len(set(fixed)) == len(fixed)
          and len(plan.input_slots) == inputs
          and all(0 <= n < parameters for _, n in plan.params)
          and set(plan.spans) == set(plan.temps)
          and all(0 <= lo <= hi < len(plan.kernels) for lo, hi in plan.spans.values()))
    for k in plan.kernels:
        ok = ok and all(r < plan.arena_slot and (r >= 0 or -1 - r in plan.temps)
                        for r in k.refs)
        ok = ok and all(0 <= s < len(plan.symbols) for s in k.symbols)
    if not ok:
        raise PlanFormatError("a stored plan whose slots or buffers do not fit this program")


__all__ = ["ErrorRecipe", "KernelRecipe", "PlanFormatError", "SymbolicPlan", "VERSION",
           "decode_dim", "encode_dim", "symbol_places"]
