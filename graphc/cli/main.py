"""The `graphc` program: argument parsing, dispatch, and errors as one line on stderr."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import NoReturn, Sequence

from graphc.cli import cache, emit, misc, show
from graphc.cli.errors import FAILURE, USAGE, CLIError
from graphc.cli.terminal import terminal_safe


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (the usage text stays under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="graphc", description="See what the graphc compiler did: graphs, the "
                "chain-rule table, generated code, the compile cache.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    show.add_parser(sub)
    misc.add_parsers(sub)
    emit.add_parser(sub)
    cache.add_parser(sub)
    return p


def _fail(message: str, code: int) -> int:
    line = terminal_safe(" ".join(message.split()))  # one line, whatever the message held
    print(f"graphc: error: {line}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in given  # accepted anywhere, also after the command
    try:
        args = parser().parse_args([a for a in given if a != "--debug"])
    except SystemExit as exc:  # --help (0) or a usage error, already reported (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    try:
        out = args.run(args)
        if out is not None:
            out = terminal_safe(out)
            sys.stdout.write(out if out.endswith("\n") else out + "\n")
        sys.stdout.flush()
        return 0
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # e.g. `graphc table | head`
        return 0
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, CLIError):
            return _fail(str(exc), exc.code)
        return _fail(f"{type(exc).__name__}: {exc}", FAILURE)


if __name__ == "__main__":
    sys.exit(main())
