"""gc.to_latex: a tensor graph as textbook math, a few equations with shared parts bound once."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from graphc.graph import Graph
from graphc.node import Node, label_of

# Precedence of a rendered piece: an operand below its operator's level gets parentheses.
REL, ADD, HAD, NEG, MUL, FN, POW, ATOM = 0, 1, 2, 2.5, 3, 4, 5, 6

# Shape bookkeeping a textbook leaves implicit: these show as their first input.
_VIEWS = frozenset({"expand_dims", "squeeze", "broadcast_to", "broadcast_like", "reshape",
                    "reshape_like", "check_index", "stop_gradient", "cast"})
_ACTIVATIONS = frozenset({"relu", "tanh", "sigmoid", "softplus"})
_RELATIONS = {"greater": ">", "greater_equal": r"\geq", "less": "<", "less_equal": r"\leq",
              "equal": "=", "not_equal": r"\neq"}
_CALLS = {"log": r"\log", "sin": r"\sin", "cos": r"\cos", "tan": r"\tan", "tanh": r"\tanh",
          "sinh": r"\sinh", "cosh": r"\cosh", "cot": r"\cot", "sec": r"\sec", "csc": r"\csc",
          "arcsin": r"\arcsin", "arccos": r"\arccos", "arctan": r"\arctan", "sigmoid": r"\sigma",
          "log2": r"\log_{2}", "log10": r"\log_{10}"}
# Ops on numbers: on one-number inputs they give one number.
_ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "square",
                          "pow", "abs", "maximum", "minimum"})
_LONG = 100  # a used-once expression longer than this (in LaTeX characters) gets a name


@dataclass(frozen=True)
class Piece:
    text: str
    prec: float


def _wrap(p: Piece, least: float) -> str:
    return p.text if p.prec >= least else rf"\left({p.text}\right)"


def _right(p: Piece, least: float) -> str:
    """A right operand: a leading minus sign gets parentheses too (`a - (-b)`)."""
    return rf"\left({p.text}\right)" if p.prec < least or p.prec == NEG else p.text


def skip_views(node: Node) -> Node:
    while node.op in _VIEWS:
        node = node.inputs[0]
    return node


def _is_scalar(node: Node, depth: int = 0) -> bool:
    """Whether `node` is one number, perhaps broadcast: its product with an array is then
    written by juxtaposition (`2 x`), not as an elementwise product."""
    node = skip_views(node)
    if all(d == 1 for d in node.shape):
        return True
    if node.op == "constant":
        return _number(node.attrs["value"]) is not None
    if node.op in _ELEMENTWISE and depth < 8:
        return all(_is_scalar(i, depth + 1) for i in node.inputs)
    return False


def _number(value: Any) -> str | None:
    """A uniform constant's value as LaTeX (None for an array of different values)."""
    arr = np.asarray(getattr(value, "array", value))  # a ConstValue holds its array
    if arr.size == 0 or not np.all(arr == arr.flat[0]):
        return None
    v = arr.flat[0].item()
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.6g}".replace("e", r"\times 10^{") + ("}" if "e" in f"{v:.6g}" else "")


def _const(node: Node) -> str | None:
    node = skip_views(node)
    return _number(node.attrs["value"]) if node.op == "constant" else None


def leaf_name(name: str) -> str:
    """`W1` -> `W_{1}`, `W_hh` -> `W_{hh}`, `x` -> `x`, `loss` -> `\\mathrm{loss}`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "v"
    m = re.fullmatch(r"([A-Za-z])_?(\d+)", name) or re.fullmatch(r"([A-Za-z])_(\w+)", name)
    if m:
        return m.group(1) + "_{" + m.group(2).replace("_", r"\_") + "}"
    if len(name) == 1:
        return name
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


# Labels gc.nn's losses give an unnamed loss: written L, like a loss named after an op.
_LIBRARY_LOSSES = ("cross_entropy", "mse", "huber", "binary_cross_entropy_with_logits")


def _label_name(label: str) -> str:
    """A gradient's label `dloss/dW1` as a fraction of partial derivatives."""
    from graphc.ops.registry import OPS
    m = re.fullmatch(r"d(.+)/d(.+)", label)
    if not m:
        return leaf_name(label)
    num = "L" if m.group(1) in OPS or m.group(1) in _LIBRARY_LOSSES else \
        leaf_name(m.group(1))
    return rf"\frac{{\partial {num}}}{{\partial {leaf_name(m.group(2))}}}"


def _is_arange(node: Node) -> bool:
    node = skip_views(node)
    if node.op == "iota":
        return True
    if node.op != "constant":
        return False
    arr = np.asarray(getattr(node.attrs["value"], "array", node.attrs["value"]))
    return arr.ndim == 1 and bool(np.array_equal(arr, np.arange(arr.size)))


Build = Callable[[Sequence[Piece]], Piece]


def _form(node: Node) -> tuple[list[Node], Build]:
    """The nodes `node`'s picture shows (after views and patterns) and how to draw it."""
    op, ins, attrs = node.op, [skip_views(i) for i in node.inputs], node.attrs
    if op == "one_hot":
        return [ins[0]], lambda a: Piece(rf"\operatorname{{onehot}}({a[0].text})", ATOM)
    if op in _RELATIONS:
        if op == "equal" and _is_arange(ins[1]):  # labels[:, None] == arange(k): one-hot
            return [ins[0]], lambda a: Piece(rf"\operatorname{{onehot}}({a[0].text})", ATOM)
        sym = _RELATIONS[op]
        return ins, lambda a: Piece(f"{_wrap(a[0], ADD)} {sym} {_wrap(a[1], ADD)}", REL)
    if op == "where":
        one, zero = _const(ins[1]), _const(ins[2])
        if one == "1" and zero == "0":  # the indicator of the relu derivative, 1[z > 0]
            return [ins[0]], lambda a: Piece(rf"\mathbb{{1}}[{a[0].text}]", ATOM)
        if zero == "0" and not _is_scalar(ins[1]):  # a masked cotangent: g ⊙ 1[z > 0]
            return [ins[1], ins[0]], lambda a: Piece(
                rf"{_wrap(a[0], HAD)} \odot \mathbb{{1}}[{a[1].text}]", HAD)
        return ins, lambda a: Piece(
            rf"\operatorname{{where}}({a[0].text}, {a[1].text}, {a[2].text})", ATOM)
    if op == "exp" and ins[0].op == "log_softmax":
        return [skip_views(ins[0].inputs[0])], \
            lambda a: Piece(rf"\operatorname{{softmax}}({a[0].text})", ATOM)
    if op == "mul":
        return ins, _product(ins)
    simple = _SIMPLE.get(op)
    if simple is not None:
        return ins, simple
    if op == "transpose" and tuple(attrs["perm"]) == tuple(reversed(range(len(ins[0].shape)))):
        return ins, lambda a: Piece(_wrap(a[0], ATOM) + r"^{\top}", POW)
    if op in ("sum", "sum_to_like"):
        return [ins[0]], _sum(node, ins[0])
    if op in _CALLS:
        fn = _CALLS[op]
        return ins, lambda a: Piece(f"{fn}({a[0].text})", ATOM)
    name = r"\operatorname{" + op.replace("_", r"\_") + "}"
    return ins, lambda a: Piece(f"{name}({', '.join(p.text for p in a)})", ATOM)


def _product(ins: list[Node]) -> Build:
    scalar = [_is_scalar(n) for n in ins]
    if not any(scalar):  # elementwise product of arrays: Hadamard
        return lambda a: Piece(rf"{_wrap(a[0], HAD)} \odot {_right(a[1], HAD)}", HAD)
    first, second = (1, 0) if scalar[1] and not scalar[0] else (0, 1)
    unit = _const(ins[first])
    if unit == "1":  # 1 x is x
        return lambda a: a[second]

    def build(a: Sequence[Piece]) -> Piece:
        left, right = _wrap(a[first], NEG), _right(a[second], MUL)
        sep = r" \cdot " if right[:1].isdigit() or right.startswith("-") else " "
        return Piece(left + sep + right, MUL)
    return build


def _sum(node: Node, x: Node) -> Build:
    """Sums over rows or columns of a matrix in matrix notation (1ᵀA, A1), else named."""
    if node.op == "sum_to_like":
        kept = len(node.shape)
        axes = tuple(range(len(x.shape) - kept)) if kept < len(x.shape) else None
    else:
        axes = node.attrs.get("axes")
    axes = tuple(range(len(x.shape))) if axes is None else tuple(axes)
    if len(x.shape) == 2 and axes == (0,):
        return lambda a: Piece(r"\mathbf{1}^{\top} " + _right(a[0], MUL), MUL)
    if len(x.shape) == 2 and axes == (1,):
        return lambda a: Piece(_wrap(a[0], MUL) + r" \mathbf{1}", MUL)
    if len(axes) == len(x.shape):
        return lambda a: Piece(rf"\textstyle\sum {_right(a[0], FN)}", FN)
    where = ",".join(str(k) for k in axes)
    return lambda a: Piece(rf"\textstyle\sum_{{\mathrm{{axis}}\,{where}}} {_right(a[0], FN)}",
                           FN)


_SIMPLE: dict[str, Build] = {
    "add": lambda a: Piece(f"{_wrap(a[0], ADD)} + {_right(a[1], ADD)}", ADD),
    "sub": lambda a: Piece(f"{_wrap(a[0], ADD)} - {_right(a[1], HAD)}", ADD),
    "neg": lambda a: Piece("-" + _right(a[0], MUL), NEG),
    "div": lambda a: Piece(rf"\frac{{{a[0].text}}}{{{a[1].text}}}", ATOM),
    "matmul": lambda a: Piece(f"{_wrap(a[0], MUL)} {_right(a[1], MUL)}", MUL),
    "relu": lambda a: Piece(rf"\max(0, {a[0].text})", ATOM),
    "maximum": lambda a: Piece(rf"\max({a[0].text}, {a[1].text})", ATOM),
    "minimum": lambda a: Piece(rf"\min({a[0].text}, {a[1].text})", ATOM),
    "exp": lambda a: Piece(f"e^{{{a[0].text}}}", POW),
    "expm1": lambda a: Piece(f"e^{{{a[0].text}}} - 1", ADD),
    "log1p": lambda a: Piece(rf"\log(1 + {a[0].text})", ATOM),
    "sqrt": lambda a: Piece(rf"\sqrt{{{a[0].text}}}", ATOM),
    "square": lambda a: Piece(_wrap(a[0], ATOM) + "^{2}", POW),
    "pow": lambda a: Piece(_wrap(a[0], ATOM) + f"^{{{a[1].text}}}", POW),
    "abs": lambda a: Piece(rf"\left|{a[0].text}\right|", ATOM),
    "floor": lambda a: Piece(rf"\lfloor {a[0].text} \rfloor", ATOM),
    "ceil": lambda a: Piece(rf"\lceil {a[0].text} \rceil", ATOM),
    "softplus": lambda a: Piece(rf"\operatorname{{softplus}}({a[0].text})", ATOM),
    "log_softmax": lambda a: Piece(rf"\log \operatorname{{softmax}}({a[0].text})", FN),
}


def _leaf(node: Node) -> Piece | None:
    if node.op in ("placeholder", "parameter"):
        return Piece(leaf_name(node.attrs.get("name") or node.op), ATOM)
    if node.op == "constant":
        text = _number(node.attrs["value"])
        if text is None:
            return Piece(r"\mathrm{const}", ATOM)
        return Piece(text, NEG if text.startswith("-") else ATOM)
    if node.op == "iota":
        return Piece(rf"\operatorname{{arange}}({node.attrs['n']})", ATOM)
    return None


class _Writer:
    """Walks the graph from its outputs, binding shared (or long) parts to names."""

    def __init__(self, outputs: Sequence[Node]) -> None:
        self.forms: dict[Node, tuple[list[Node], Build]] = {}
        self.uses: dict[Node, int] = {}
        self._count(outputs)
        self.names: dict[Node, str] = {}
        self.used_names = {leaf_name(n.attrs.get("name") or n.op) for n in self.forms
                           if n.op in ("placeholder", "parameter")}
        self.counters: dict[str, int] = {}
        self.pieces: dict[Node, Piece] = {}
        self.lines: list[str] = []

    def _count(self, outputs: Sequence[Node]) -> None:
        stack = [skip_views(o) for o in outputs]
        while stack:
            node = stack.pop()
            if node in self.forms:
                continue
            kids, build = ([], lambda a: a[0]) if _leaf(node) is not None else _form(node)
            self.forms[node] = (kids, build)
            for kid in kids:
                self.uses[kid] = self.uses.get(kid, 0) + 1
                stack.append(kid)

    def fresh(self, node: Node) -> str:
        label = label_of(node)
        if label:
            base = _label_name(label)
            if base not in self.used_names:
                self.used_names.add(base)
                return base
        letter = (r"\delta" if node.origin is not None
                  else "h" if node.op in _ACTIVATIONS else "z")
        while True:
            k = self.counters[letter] = self.counters.get(letter, 0) + 1
            name = f"{letter}_{{{k}}}"
            if name not in self.used_names:
                self.used_names.add(name)
                return name

    def piece(self, root: Node) -> Piece:
        """Draws `root`, emitting the equations of the names it uses first (iteratively)."""
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if node in self.pieces:
                continue
            leaf = _leaf(node)
            if leaf is not None:
                self.pieces[node] = leaf
                continue
            kids, build = self.forms[node]
            if not ready:
                stack.append((node, True))
                stack.extend((k, False) for k in reversed(kids) if k not in self.pieces)
                continue
            args = [self.pieces[k] for k in kids]
            piece = build(args)
            passthrough = any(piece is a for a in args)  # `1 x` drawn as x: no new name
            shared = self.uses.get(node, 0) > 1 or bool(label_of(node))
            if node is not root and not passthrough and (shared or len(piece.text) > _LONG):
                piece = self.bind(node, piece)
            self.pieces[node] = piece
        return self.pieces[root]

    def bind(self, node: Node, piece: Piece, name: str | None = None) -> Piece:
        name = name or self.fresh(node)
        self.lines.append(f"{name} &= {piece.text}")
        return Piece(name, ATOM)


def _outputs(target: Any) -> list[Node]:
    if isinstance(target, Graph):
        return list(target.outputs)
    items = list(target) if isinstance(target, (list, tuple)) else [target]
    nodes = []
    for i, item in enumerate(items):
        node = getattr(item, "node", item)
        if not isinstance(node, Node):
            raise TypeError(f"to_latex: expected a Tensor, a list of Tensors or a Graph, got "
                            f"{type(item).__name__}" + (f" at position {i}" if i else ""))
        nodes.append(node)
    if not nodes:
        raise ValueError("to_latex: no tensors given")
    return nodes


def to_latex(t: Any) -> str:
    """LaTeX for the graph behind a tensor (or a list of tensors, or a Graph): matrix notation
    (`x W_{1}`, `^{\\top}`, `\\odot` for elementwise products of arrays, `\\mathbf{1}` sums,
    `\\mathbb{1}[z > 0]`, softmax). Parts used more than once are bound to names once
    (`z_{1} &= ...`; gradient parts `\\delta_k`), so a derivative reads like a textbook's.
    One expression with nothing shared is returned bare; otherwise an `aligned` block."""
    outputs = _outputs(t)
    writer = _Writer(outputs)
    if len(outputs) == 1:
        only = skip_views(outputs[0])
        piece = writer.piece(only)
        if not writer.lines and not label_of(outputs[0]):
            return piece.text
        name = _output_name(outputs[0], None, writer.used_names)
        writer.pieces[only] = writer.bind(only, piece, name)
    else:
        for i, out in enumerate(outputs):
            node = skip_views(out)
            piece = writer.piece(node)
            writer.pieces[node] = writer.bind(node, piece, _output_name(out, i, writer.used_names))
    body = " \\\\\n".join(writer.lines)
    return "\\begin{aligned}\n" + body + "\n\\end{aligned}"


def _output_name(out: Node, index: int | None, taken: set[str]) -> str:
    """An output's label; else L for a scalar (a loss, most often), y for an array."""
    label = label_of(out) or label_of(skip_views(out))
    if label:
        return _label_name(label)
    base = "L" if out.ndim == 0 else "y"
    if base in taken:
        base = r"\mathrm{out}"
    return base if index is None else f"{base}_{{{index + 1}}}"
