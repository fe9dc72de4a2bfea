"""`graphc table` (the chain-rule table) and `graphc bench` (the training benchmarks)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from graphc import table
from graphc.cli.errors import CLIError

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training.py"


def run_table(args: argparse.Namespace) -> str:
    return table.markdown() if args.format == "markdown" else table.latex()


def run_bench(args: argparse.Namespace) -> None:
    if not BENCH.is_file():
        raise CLIError("graphc bench needs benchmarks/bench_training.py, which ships with the "
                       "source repository, not with this installation")
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    code = subprocess.call([sys.executable, str(BENCH), *extra])
    if code:
        raise CLIError(f"the benchmark exited with status {code}", code)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("table", help="print the chain-rule table",
                       description="Every elementwise primitive, its definition and its "
                                   "partial derivatives, generated from the rules.")
    p.add_argument("--format", choices=("markdown", "latex"), default="markdown")
    p.set_defaults(run=run_table)
    b = sub.add_parser("bench", help="run the training benchmarks",
                       description="Runs benchmarks/bench_training.py; arguments after -- go "
                                   "to it (e.g. graphc bench -- --only W2 --repeat 20).")
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    b.set_defaults(run=run_bench)
