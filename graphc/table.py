"""Prints the chain-rule table (every elementwise primitive and its partial derivatives) as
Markdown and LaTeX, generated from the rules themselves: `python -m graphc.table`."""
from __future__ import annotations

import argparse

import sympy as sp

from graphc.derivatives import arg_symbols, definition, elementwise_ops, partials


def rows() -> list[tuple[str, sp.Expr, list[tuple[sp.Symbol, sp.Expr]]]]:
    out = []
    for op in elementwise_ops():
        pairs = [(s, d) for s, d in zip(arg_symbols(op), partials(op)) if d is not None]
        out.append((op, definition(op), pairs))
    return out


def markdown() -> str:
    lines = ["| primitive | definition | partial derivatives |", "| --- | --- | --- |"]
    for op, f, pairs in rows():
        parts = "; ".join(f"$\\partial/\\partial {s} = {sp.latex(d)}$" for s, d in pairs)
        lines.append(f"| `{op}` | ${sp.latex(f)}$ | {parts or 'not differentiable'} |")
    return "\n".join(lines)


def latex() -> str:
    lines = [r"\begin{tabular}{lll}", r"primitive & definition & partial derivatives \\ \hline"]
    for op, f, pairs in rows():
        parts = ", ".join(rf"$\frac{{\partial}}{{\partial {s}}} = {sp.latex(d)}$"
                          for s, d in pairs) or "---"
        name = op.replace("_", r"\_")
        lines.append(rf"\texttt{{{name}}} & ${sp.latex(f)}$ & {parts} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--format", choices=("markdown", "latex", "both"), default="both")
    args = parser.parse_args(argv)
    if args.format in ("markdown", "both"):
        print(markdown())
    if args.format == "both":
        print()
    if args.format in ("latex", "both"):
        print(latex())


if __name__ == "__main__":
    main()
