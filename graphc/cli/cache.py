"""`graphc cache info|clear`: the compile cache's folder, its entries and their size."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from graphc.cli.errors import CLIError
from graphc.runtime.cache import default_dir, entry_files
from graphc.runtime.cache_folder import untrusted_reason
from graphc.runtime.cache_secret import KEY_ENV, KEY_FILE_ENV, user_key_path


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _folder(args: argparse.Namespace) -> Path:
    if args.dir:
        return Path(args.dir)
    folder = default_dir()
    if folder is None:
        raise CLIError("the compile cache is switched off (GRAPHC_CACHE=0)")
    return folder


def _stat_sizes(files: list[Path]) -> tuple[int, int]:
    count = total = 0
    for f in files:
        try:
            total += f.stat().st_size
            count += 1
        except OSError:  # removed by another process meanwhile
            pass
    return count, total


def _trust(folder: Path) -> str:
    """Which key signs entries and whether graphc uses the folder (making nothing)."""
    shared = bool(os.environ.get(KEY_ENV) is not None or os.environ.get(KEY_FILE_ENV))
    if os.environ.get(KEY_ENV) is not None:
        key = f"{KEY_ENV} (a team's key)"
    elif os.environ.get(KEY_FILE_ENV):
        key = f"{KEY_FILE_ENV}={os.environ[KEY_FILE_ENV]} (a team's key)"
    else:
        path = user_key_path()
        key = f"{path}" + ("" if path.exists() else " (made on the first compile)")
    try:
        reason = untrusted_reason(os.stat(folder), shared)
    except OSError:
        reason = None  # made (mode 0700) on the first compile
    used = "yes" if reason is None else f"no: {reason}"
    return f"key: {key}\nused: {used}"


def run(args: argparse.Namespace) -> str:
    folder = _folder(args)
    files = entry_files(folder)
    count, total = _stat_sizes(files)
    if args.action == "info":
        return f"folder: {folder}\nentries: {count}\nsize: {_size(total)}\n{_trust(folder)}"
    removed = freed = 0
    for f in files:
        try:
            size = f.stat().st_size
            f.unlink()  # a reader has the whole entry or a miss; never half of one
        except OSError:
            continue
        removed += 1
        freed += size
    return f"removed {removed} entries ({_size(freed)}) from {folder}"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cache", help="the compile cache: where it is, how big, clear it",
                       description="info: the cache folder, its entry count and total size, "
                                   "the key that signs entries and whether graphc uses the "
                                   "folder (not when other users can write it); "
                                   "clear: removes graphc's entries (and nothing else) from it. "
                                   "GRAPHC_CACHE_DIR sets the folder.")
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("--dir", help="the cache folder (default: GRAPHC_CACHE_DIR, "
                                 "else ~/.cache/graphc)")
    p.set_defaults(run=run)
