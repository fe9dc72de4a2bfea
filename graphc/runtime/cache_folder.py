"""Which compile-cache folder graphc uses: one it creates with mode 0700, or an existing one
that no other user can write into; a folder others can write is refused with one warning."""
from __future__ import annotations

import os
import stat
import threading
import warnings
from pathlib import Path

from graphc.runtime.cache_secret import my_uid


class CacheWarning(RuntimeWarning):
    """The disk cache is not used (a folder or key graphc will not trust); code still runs."""


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(message: str) -> None:
    """Warns about `message` once per process, however many functions meet the problem."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(f"graphc: {message}", CacheWarning, stacklevel=4)


def untrusted_reason(info: os.stat_result, shared: bool) -> str | None:
    """Why a folder with `info` cannot hold code this user runs, or None. With a team's key
    (`shared`) its group may write and any member may own it; never other users."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o002:
        return f"other users can write into it (mode {mode:04o})"
    if shared:
        return None
    uid = my_uid()
    if uid is not None and info.st_uid != uid:
        return f"it belongs to another user (uid {info.st_uid})"
    if mode & 0o020:
        return (f"its group can write into it (mode {mode:04o}); to share a cache with a "
                "team, share a key too (GRAPHC_CACHE_KEY)")
    return None


def trusted_folder(folder: Path, shared: bool) -> Path | None:
    """`folder`, created 0700 if missing, or None (no disk cache): when it cannot be made
    (quietly, as before) or others can write into it (with one warning naming it)."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        info = os.stat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return None
    reason = untrusted_reason(info, shared)
    if reason is not None:
        warn_once(f"the compile cache folder {folder} is not used: {reason}; compiling "
                  "without a disk cache (set GRAPHC_CACHE_DIR to a folder of your own)")
        return None
    return folder
