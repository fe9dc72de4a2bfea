"""The `graphc` command line: show, table, compile, cache and bench (see `graphc --help`)."""
from graphc.cli.main import main

__all__ = ["main"]
