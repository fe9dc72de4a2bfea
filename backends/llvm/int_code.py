"""Integer arithmetic written down as straight-line Python: the same recipe run on plain ints
computes a number, run on `Code` values (ints known only later) writes the statements that
compute it. A symbolic program's GEMM descriptors are made this way once per plan, with
every size that is the same for all bindings folded in (backends/llvm/binding_table.py), so
a new batch size runs a few dozen assignments instead of the whole blocking recipe.

The generated code is Python with the recipe's own operators, so it gives the recipe's
numbers exactly. A decision on a value known only later (an `if`, `==`, `<`) raises
TypeError while writing: the recipe must say it with `pick`, `ge`, `le`, `eq`, `both`."""
from __future__ import annotations

import math
from typing import Any, Callable, Union

Int = Union[int, "Code"]


class Writer:
    """The statements written so far; each distinct expression is assigned once."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, str] = {}

    def value(self, text: str) -> "Code":
        """The value of the Python expression `text` (its statement written once)."""
        name = self.names.get(text)
        if name is None:
            name = self.names[text] = f"_{len(self.names)}"
            self.lines.append(f"{name} = {text}")
        return Code(self, name)

    def function(self, name: str, args: str, head: list[str], result: list[Int]
                 ) -> Callable[..., Any]:
        """def name(args): head; the statements; return [result]."""
        body = head + self.lines + ["return [" + ", ".join(_text(x) for x in result) + "]"]
        return function_of(name, args, body)


# Functions made, by source: a model rebuilt in the same process compiles none again.
_MADE: dict[str, Callable[..., Any]] = {}
_MADE_MAX = 256


def function_of(name: str, args: str, body: list[str]) -> Callable[..., Any]:
    """def name(args): body (lines), compiled once per process for each distinct text."""
    source = f"def {name}({args}):\n" + "".join(f"    {line}\n" for line in body)
    made = _MADE.get(source)
    if made is None:
        namespace: dict[str, Any] = {"min": min, "max": max, "gcd": math.gcd}
        exec(compile(source, f"<{name}>", "exec"), namespace)  # (our own text: ints, names)
        if len(_MADE) >= _MADE_MAX:
            _MADE.pop(next(iter(_MADE)))
        made = _MADE[source] = namespace[name]
    return made


def _text(x: object) -> str:
    if isinstance(x, Code):
        return x.name
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"generated arithmetic: not an int: {x!r}")
    return f"({x})" if x < 0 else str(x)


def _is(x: object, k: int) -> bool:
    return not isinstance(x, Code) and x == k


class Code:
    """An int known only when the written code runs."""

    __slots__ = ("writer", "name")

    def __init__(self, writer: Writer, name: str) -> None:
        self.writer, self.name = writer, name

    def _op(self, fmt: str, *args: object) -> "Code":
        return self.writer.value(fmt.format(*[_text(a) for a in args]))

    # (x + 0, x * 1, x // 1 are x: fewer statements to compile)
    def __add__(self, o: Int) -> "Code":
        return self if _is(o, 0) else self._op("{} + {}", self, o)

    def __radd__(self, o: int) -> "Code":
        return self if o == 0 else self._op("{} + {}", o, self)

    def __sub__(self, o: Int) -> "Code":
        return self if _is(o, 0) else self._op("{} - {}", self, o)

    def __rsub__(self, o: int) -> "Code":
        return self._op("{} - {}", o, self)

    def __mul__(self, o: Int) -> "Code":
        return self if _is(o, 1) else self._op("{} * {}", self, o)

    def __rmul__(self, o: int) -> "Code":
        return self if o == 1 else self._op("{} * {}", o, self)

    def __floordiv__(self, o: Int) -> "Code":
        return self if _is(o, 1) else self._op("{} // {}", self, o)

    def __rfloordiv__(self, o: int) -> "Code":
        return self._op("{} // {}", o, self)

    def __mod__(self, o: Int) -> "Code":
        return self._op("{} % {}", self, o)

    def __neg__(self) -> "Code":
        return self._op("-{}", self)

    def _decided(self, *_: object) -> bool:
        raise TypeError("generated arithmetic: a decision on a value known only later")

    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _decided
    __hash__ = None  # type: ignore[assignment]


# Each helper computes on ints first (the recipe's own speed where it runs on numbers):
# a Code operand refuses (TypeError) and the helper writes the expression instead.
def _call(fmt: str, *xs: Any) -> Code:
    writer = next(x.writer for x in xs if isinstance(x, Code))
    return writer.value(fmt.format(*[_text(x) for x in xs]))


def imin(a: Any, b: Any) -> Any:
    try:
        return min(a, b)
    except TypeError:
        return _call("min({}, {})", a, b)


def imax(a: Any, b: Any) -> Any:
    try:
        return max(a, b)
    except TypeError:
        return _call("max({}, {})", a, b)


def igcd(a: Any, b: Any) -> Any:
    try:
        return math.gcd(a, b)
    except TypeError:
        return _call("gcd({}, {})", a, b)


def ge(a: Any, b: Any) -> Any:
    try:
        return a >= b
    except TypeError:
        return _call("({} >= {})", a, b)


def le(a: Any, b: Any) -> Any:
    try:
        return a <= b
    except TypeError:
        return _call("({} <= {})", a, b)


def eq(a: Any, b: Any) -> Any:
    try:
        return a == b
    except TypeError:
        return _call("({} == {})", a, b)


def both(a: Any, b: Any) -> Any:
    """`a and b` for truth values."""
    try:
        return bool(a and b)
    except TypeError:  # (a is known: `a and b` gave b)
        return _call("({} and {})", a, b) if isinstance(a, Code) else b


def pick(c: Any, a: Any, b: Any) -> Any:
    """`a if c else b`."""
    try:
        return a if c else b
    except TypeError:
        return _call("({} if {} else {})", a, c, b)


def as_int(c: Any) -> Any:
    """int(c) of a truth value."""
    try:
        return int(c)
    except TypeError:
        return _call("int({})", c)
