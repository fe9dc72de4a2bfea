"""Symbolic sizes: a size known only at call time is a symbol (named, or anonymous for None),
and shape rules compute with sums and products of symbols, so a derivative graph can be proved
to need no shape bookkeeping. A call binds every symbol to an int once."""
from __future__ import annotations

import itertools
import math
import threading
from typing import Callable, Iterable, Iterator, Mapping, Union

_anonymous = itertools.count(1)


class SizeVar:
    """An atom: a named size ("N", shared by every placeholder that uses the name) or an
    anonymous one (a `None` in a placeholder: its own size)."""

    __slots__ = ("name", "uid", "_hash")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.uid = 0 if name is not None else next(_anonymous)
        self._hash = hash(("SizeVar", name, self.uid))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SizeVar) and self.name == other.name and \
            self.uid == other.uid

    def __hash__(self) -> int:
        return self._hash

    def key(self) -> tuple:
        return (0, self.name or "", self.uid)

    def evaluate(self, values: Mapping["SizeVar", int]) -> int:
        return values[self]

    def atoms(self) -> Iterator["SizeVar"]:
        yield self

    def __str__(self) -> str:
        return self.name if self.name is not None else "?"

    __repr__ = __str__


class SizeFunc:
    """An atom that is not a polynomial: floordiv(a, k), min(a, b), max(a, b), isqrt(a)."""

    __slots__ = ("kind", "args", "_hash")

    def __init__(self, kind: str, args: tuple["Dim", ...]) -> None:
        self.kind, self.args = kind, args
        self._hash = hash(("SizeFunc", kind, args))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SizeFunc) and self.kind == other.kind and \
            self.args == other.args

    def __hash__(self) -> int:
        return self._hash

    def key(self) -> tuple:
        return (1, self.kind, tuple(str(a) for a in self.args))

    def evaluate(self, values: Mapping[SizeVar, int]) -> int:
        args = [evaluate(a, values) for a in self.args]
        if self.kind == "floordiv":
            return args[0] // args[1]
        if self.kind == "isqrt":
            return math.isqrt(args[0])
        return min(args) if self.kind == "min" else max(args)

    def atoms(self) -> Iterator[SizeVar]:
        for a in self.args:
            if isinstance(a, Size):
                yield from a.atoms()

    def text(self, name_of: "Callable[[SizeVar], str]") -> str:
        args = [a.text(name_of) if isinstance(a, Size) else str(a) for a in self.args]
        if self.kind == "floordiv":
            return f"({args[0]})//{args[1]}"
        return f"{self.kind}({', '.join(args)})"

    def __str__(self) -> str:
        return self.text(str)

    __repr__ = __str__


Atom = Union[SizeVar, SizeFunc]
Monomial = tuple[Atom, ...]  # sorted by key, with repetition for powers


def _mono_key(m: Monomial) -> tuple:
    return (len(m), tuple(a.key() for a in m))


class Size:
    """A size that is not a constant: a polynomial in atoms with integer coefficients, in a
    canonical form (so equal sizes compare equal). Constants are plain ints, never a Size."""

    __slots__ = ("terms", "_hash")

    terms: tuple[tuple[Monomial, int], ...]
    _hash: int

    def __init__(self, terms: tuple[tuple[Monomial, int], ...]) -> None:
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "_hash", hash(("Size", terms)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("sizes are immutable")

    @staticmethod
    def of(atom: Atom) -> "Size":
        return Size((((atom,), 1),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Size) and self.terms == other.terms

    def __hash__(self) -> int:
        return self._hash

    def __bool__(self) -> bool:
        raise TypeError(f"size {self} is known only at call time: it has no truth value")

    def __index__(self) -> int:
        raise TypeError(f"size {self} is known only at call time, not an int")

    def __lt__(self, other: object) -> bool:
        return _compare(self, other, "<")

    def __le__(self, other: object) -> bool:
        return _compare(self, other, "<=")

    def __gt__(self, other: object) -> bool:
        return _compare(self, other, ">")

    def __ge__(self, other: object) -> bool:
        return _compare(self, other, ">=")

    def __add__(self, other: "Dim") -> "Dim":
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other: "Dim") -> "Dim":
        return add(self, mul(other, -1))

    def __rsub__(self, other: "Dim") -> "Dim":
        return add(other, mul(self, -1))

    def __neg__(self) -> "Dim":
        return mul(self, -1)

    def __mul__(self, other: "Dim") -> "Dim":
        return mul(self, other)

    __rmul__ = __mul__

    def __floordiv__(self, other: "Dim") -> "Dim":
        return floordiv(self, other)

    def __rfloordiv__(self, other: "Dim") -> "Dim":
        return floordiv(other, self)

    def atoms(self) -> Iterator[SizeVar]:
        for mono, _ in self.terms:
            for atom in mono:
                yield from atom.atoms()

    def evaluate(self, values: Mapping[SizeVar, int]) -> int:
        total = 0
        for mono, coeff in self.terms:
            product = coeff
            for atom in mono:
                product *= atom.evaluate(values)
            total += product
        return total

    def is_var(self) -> bool:
        """A single symbol (not an expression of symbols)."""
        return len(self.terms) == 1 and self.terms[0][1] == 1 and \
            len(self.terms[0][0]) == 1 and isinstance(self.terms[0][0][0], SizeVar)

    def text(self, name_of: "Callable[[SizeVar], str]") -> str:
        """The size written out, each symbol by `name_of` (str: its name, "?" if none)."""
        parts = []
        for mono, coeff in self.terms:
            factors = "*".join(name_of(a) if isinstance(a, SizeVar) else a.text(name_of)
                               for a in mono)
            if not mono:
                text = str(abs(coeff))
            elif abs(coeff) == 1:
                text = factors
            else:
                text = f"{abs(coeff)}*{factors}"
            sign = "-" if coeff < 0 else "+"
            parts.append((sign, text))
        out = ("-" if parts[0][0] == "-" else "") + parts[0][1]
        for sign, text in parts[1:]:
            out += f" {sign} {text}"
        return out

    def __str__(self) -> str:
        return self.text(str)

    __repr__ = __str__


Dim = Union[int, Size]


def _compare(a: Size, other: object, op: str) -> bool:
    """Orders that hold for every value of the symbols (sizes are >= 0): a size minus a
    constant it cannot fall below. Otherwise the question has no answer at build time."""
    if isinstance(other, (int, Size)):
        diff = add(a, mul(other, -1))
        low = lower_bound(diff)
        if op in (">=", ">") and low is not None and (low > 0 or op == ">=" and low >= 0):
            return True
        high = lower_bound(mul(diff, -1))
        if op in ("<=", "<") and high is not None and (high > 0 or op == "<=" and high >= 0):
            return True
    raise TypeError(f"size {a} is known only at call time: cannot tell whether it is "
                    f"{op} {other}")


def lower_bound(d: Dim) -> int | None:
    """A constant that `d` is never below, for sizes >= 0 (None: none found)."""
    if isinstance(d, int):
        return d
    low = 0
    for mono, coeff in d.terms:
        if not mono:
            low += coeff
        elif coeff < 0:
            return None
    return low


def _terms(d: Dim) -> dict[Monomial, int]:
    if isinstance(d, Size):
        return dict(d.terms)
    return {(): d} if d else {}


def _make(terms: dict[Monomial, int]) -> Dim:
    kept = [(m, c) for m, c in terms.items() if c]
    if not kept:
        return 0
    if len(kept) == 1 and kept[0][0] == ():
        return kept[0][1]
    kept.sort(key=lambda mc: _mono_key(mc[0]))
    return Size(tuple(kept))


# Sums and products with a symbol, remembered by their operands (equal operands give an
# equal result): lowering and unit planning ask for the same few again and again (a
# 96-layer MLP step's buffer sizes: ~4,000 products of a handful of sizes, each ~10 us).
# Plain ints and Sizes only; emptied when full.
_ARITHMETIC: dict[tuple[str, Dim, Dim], Dim] = {}
_ARITHMETIC_LIMIT = 1 << 15


def _remember(key: tuple[str, Dim, Dim], value: Dim) -> Dim:
    if len(_ARITHMETIC) >= _ARITHMETIC_LIMIT:
        _ARITHMETIC.clear()
    _ARITHMETIC[key] = value
    return value


def _memo_key(op: str, a: Dim, b: Dim) -> tuple[str, Dim, Dim] | None:
    ta, tb = type(a), type(b)
    return (op, a, b) if (ta is int or ta is Size) and (tb is int or tb is Size) else None


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    key = _memo_key("+", a, b)
    if key is not None:
        hit = _ARITHMETIC.get(key)
        if hit is not None:
            return hit
    terms = _terms(a)
    for m, c in _terms(b).items():
        terms[m] = terms.get(m, 0) + c
    out = _make(terms)
    return out if key is None else _remember(key, out)


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    key = _memo_key("*", a, b)
    if key is not None:
        hit = _ARITHMETIC.get(key)
        if hit is not None:
            return hit
    terms: dict[Monomial, int] = {}
    for ma, ca in _terms(a).items():
        for mb, cb in _terms(b).items():
            m = tuple(sorted(ma + mb, key=lambda atom: atom.key()))
            terms[m] = terms.get(m, 0) + ca * cb
    out = _make(terms)
    return out if key is None else _remember(key, out)


def floordiv(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    if isinstance(b, int) and b > 0 and isinstance(a, Size) and \
            all(c % b == 0 for _, c in a.terms):
        return _make({m: c // b for m, c in a.terms})
    if isinstance(b, Size):  # exact division by a monomial factor (N*784 // N)
        if len(b.terms) == 1 and b.terms[0][1] == 1 and isinstance(a, Size):
            (factor, _), = b.terms
            out: dict[Monomial, int] = {}
            for m, c in a.terms:
                rest = list(m)
                for atom in factor:
                    if atom not in rest:
                        break
                    rest.remove(atom)
                else:
                    out[tuple(rest)] = c
                    continue
                break
            else:
                return _make(out)
    return Size.of(SizeFunc("floordiv", (a, b)))


def isqrt(a: Dim) -> Dim:
    """The integer square root (a scan's checkpoint spacing)."""
    if isinstance(a, int):
        return math.isqrt(a)
    return Size.of(SizeFunc("isqrt", (a,)))


def _never_below(a: Dim, b: Dim) -> bool:
    """a >= b for every value of the symbols (sizes are >= 0)."""
    low = lower_bound(add(a, mul(b, -1)))
    return low is not None and low >= 0


def minimum(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    if _never_below(a, b):
        return b
    if _never_below(b, a):
        return a
    return Size.of(SizeFunc("min", tuple(sorted((a, b), key=str))))


def maximum(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    if _never_below(a, b):
        return a
    if _never_below(b, a):
        return b
    return Size.of(SizeFunc("max", tuple(sorted((a, b), key=str))))


def evaluate(d: Dim, values: Mapping[SizeVar, int]) -> int:
    return d if isinstance(d, int) else d.evaluate(values)


def is_static(d: object) -> bool:
    return isinstance(d, int)


def all_static(shape: Iterable[Dim]) -> bool:
    return all(isinstance(d, int) for d in shape)


def symbols_of(shape: Iterable[object]) -> set[SizeVar]:
    out: set[SizeVar] = set()
    for d in shape:
        if isinstance(d, Size):
            out.update(d.atoms())
    return out


def fresh() -> Size:
    """A new anonymous size (a `None` in a placeholder's shape)."""
    return Size.of(SizeVar(None))


_named: dict[str, Size] = {}
_named_lock = threading.Lock()


def named(name: str) -> Size:
    """The size called `name`: the same symbol wherever the name is used."""
    with _named_lock:
        size = _named.get(name)
        if size is None:
            size = _named[name] = Size.of(SizeVar(name))
        return size


def shape_dim(d: object, what: str) -> Dim:
    """One entry of a user's placeholder shape: an int >= 0, None, or a name."""
    if d is None:
        return fresh()
    if isinstance(d, str):
        if not d.isidentifier():
            raise ValueError(f"{what}: a size name must be an identifier, got {d!r}")
        return named(d)
    if isinstance(d, Size):
        return d
    if isinstance(d, bool) or not hasattr(d, "__index__"):
        raise TypeError(f"{what}: a size must be an int, None or a name, got {d!r}")
    n = int(d)
    if n < 0:
        raise ValueError(f"{what}: a size must be >= 0, got {n}")
    return n


def user_dim(d: Dim) -> int | str | None:
    """How a size shows to users in `t.shape`: an int, a name, or None."""
    if isinstance(d, int):
        return d
    return d.terms[0][0][0].name if d.is_var() else None  # type: ignore[union-attr]


def substitute(d: object, values: Mapping[SizeVar, int]) -> object:
    """`d` with its symbols given values: sizes inside tuples too (attrs such as shapes)."""
    if isinstance(d, Size):
        return d.evaluate(values)
    if isinstance(d, tuple):
        return tuple(substitute(x, values) for x in d)
    return d


def has_symbols(value: object) -> bool:
    if isinstance(value, Size):
        return True
    if isinstance(value, tuple):
        return any(has_symbols(x) for x in value)
    return False


class Assumption:
    """Two sizes a shape rule took to be equal (e.g. a batch size met another in a sum):
    checked once per call, with the op and the user's line for the message."""

    __slots__ = ("a", "b", "op", "where")

    def __init__(self, a: Dim, b: Dim, op: str, where: object) -> None:
        self.a, self.b, self.op, self.where = a, b, op, where


_collecting = threading.local()


def assume_equal(a: Dim, b: Dim) -> None:
    """Called by shape rules: `a` and `b` must be equal at run time."""
    found = getattr(_collecting, "found", None)
    if found is not None:
        found.append((a, b))


class collecting:
    """Context for make()/rebuild(): the equalities the shape rule assumed, in `found`."""

    def __enter__(self) -> list[tuple[Dim, Dim]]:
        self.saved = getattr(_collecting, "found", None)
        self.found: list[tuple[Dim, Dim]] = []
        _collecting.found = self.found
        return self.found

    def __exit__(self, *exc: object) -> None:
        _collecting.found = self.saved


# The representative binding (the first call's sizes) while a program is scheduled and
# rendered with symbolic sizes: policy choices that do not change results (thread counts,
# GEMM orientation, unrolling) are made with it; code stays correct for every binding.
_REPRESENTATIVE: list[Mapping[SizeVar, int]] = []


class representative:
    """`with representative(values):` makes `hint` answer from `values`."""

    def __init__(self, values: Mapping[SizeVar, int]) -> None:
        self.values = values

    def __enter__(self) -> Mapping[SizeVar, int]:
        _REPRESENTATIVE.append(self.values)
        return self.values

    def __exit__(self, *exc: object) -> None:
        _REPRESENTATIVE.pop()


def current_representative() -> Mapping[SizeVar, int] | None:
    """The binding `hint` answers from (the innermost `representative`), or None."""
    return _REPRESENTATIVE[-1] if _REPRESENTATIVE else None


def hint(d: Dim) -> int:
    """`d` itself if it is an int, else its value in the representative binding: for
    choices of policy only, never for what the code computes."""
    if isinstance(d, int):
        return d
    if not _REPRESENTATIVE:
        raise TypeError(f"size {d} is known only at call time and no representative "
                        "binding is set")
    return d.evaluate(_REPRESENTATIVE[-1])


def exact_quotient(a: Dim, b: Dim) -> Dim | None:
    """a / b where b divides a for every value of the symbols (b an int or one term:
    every term of a divisible by it), else None."""
    if isinstance(b, int):
        if b == 0:
            return None
        if isinstance(a, int):
            return a // b if a % b == 0 else None
        if all(c % b == 0 for _, c in a.terms):
            return _make({m: c // b for m, c in a.terms})
        return None
    if len(b.terms) != 1:
        return None
    (bm, bc), = b.terms
    out: dict[Monomial, int] = {}
    for m, c in _terms(a).items():
        rest = list(m)
        for atom in bm:
            if atom not in rest:
                return None
            rest.remove(atom)
        if c % bc:
            return None
        out[tuple(rest)] = c // bc
    q = _make(out)
    return q if mul(q, b) == a else None
