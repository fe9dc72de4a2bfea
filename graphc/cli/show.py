"""`graphc show`: a graph as text, Graphviz DOT, a picture (SVG/PNG) or an explorer page."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import graphc
from graphc.cli.emit import as_function
from graphc.cli.errors import USAGE, CLIError
from graphc.cli.target import load_target
from graphc.function import Function
from graphc.printing import show, to_dot
from graphc.runtime.atomic_file import write_atomic

FORMATS = ("text", "dot", "svg", "png", "html")


def _picture(target: Any, fmt: str, out: str | None) -> str | None:
    render = getattr(graphc, "render", None)
    if render is None:
        raise CLIError(f"--format {fmt} needs gc.render, which this version of graphc lacks")
    if out is not None:
        if Path(out).suffix.lower() != f".{fmt}":
            raise CLIError(f"--format {fmt}: the output file {out!r} should end in .{fmt}",
                           USAGE)
        render(target, out)
        return None
    if fmt == "png":
        raise CLIError("--format png writes binary data: give a file with -o", USAGE)
    fd, tmp = tempfile.mkstemp(suffix=".svg")
    os.close(fd)
    try:
        render(target, tmp)
        return Path(tmp).read_text()
    finally:
        os.unlink(tmp)


def _page(target: Any, out: str | None) -> None:
    explore = getattr(graphc, "explore", None)
    if explore is None:
        raise CLIError("--format html needs gc.explore, which this version of graphc lacks")
    if out is None:
        raise CLIError("--format html writes a page: give a file with -o", USAGE)
    explore(target if isinstance(target, Function) else as_function(target, None), out)


def run(args: argparse.Namespace) -> str | None:
    if args.output is not None and not Path(args.output).resolve().parent.is_dir():
        raise CLIError(f"-o: the folder of {args.output!r} does not exist", USAGE)
    target = load_target(args.target)
    if args.format in ("svg", "png"):
        return _picture(target, args.format, args.output)
    if args.format == "html":
        _page(target, args.output)
        return None
    text = show(target) if args.format == "text" else to_dot(target)
    if args.output is None:
        return text
    write_atomic(args.output, text + "\n")
    return None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("show", help="print or draw the graph behind a tensor or function",
                       description="Show FILE.py:NAME: a tensor, a list of tensors, a Graph, "
                                   "a gc.Function, or a zero-argument callable returning one.")
    p.add_argument("target", metavar="FILE.py:NAME")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="text (gc.show, the default), dot (gc.to_dot), svg/png (gc.render), "
                        "html (gc.explore)")
    p.add_argument("-o", "--output", metavar="OUT", help="write to this file (default: stdout)")
    p.set_defaults(run=run)
