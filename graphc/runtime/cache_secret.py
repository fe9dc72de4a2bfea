"""The secret key that signs compile-cache entries: the user's own (made on first use, mode
0600, in their config folder, never in the cache folder) or one a team shares on purpose
(GRAPHC_CACHE_KEY, or GRAPHC_CACHE_KEY_FILE naming a file that holds it)."""
from __future__ import annotations

import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

KEY_ENV = "GRAPHC_CACHE_KEY"
KEY_FILE_ENV = "GRAPHC_CACHE_KEY_FILE"
KEY_FILE_NAME = "cache-key"
MIN_KEY_CHARS = 16  # a shared key shorter than this is too easy to guess


@dataclass(frozen=True)
class CacheSecret:
    """The HMAC key, where it came from (for messages), and whether a team shares it (then
    a cache folder its members can all write is accepted)."""
    key: bytes
    source: str
    shared: bool


class UntrustedKey(Exception):
    """The user's own key file exists but others could read or change it, or it cannot be
    made: the disk cache is not used (the message says why and what to do)."""


def config_dir() -> Path:
    """$XDG_CONFIG_HOME/graphc, else ~/.config/graphc (XDG: a relative value is ignored)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "graphc"


def user_key_path() -> Path:
    return config_dir() / KEY_FILE_NAME


def my_uid() -> int | None:
    """This process's user id (None where the platform has none: no ownership checks)."""
    getuid = getattr(os, "getuid", None)
    return getuid() if getuid is not None else None


def _checked_text(text: str, what: str) -> bytes:
    key = text.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"{what}: the cache key must have at least {MIN_KEY_CHARS} "
                         f"characters (it has {len(key)}); make one with "
                         "`python -c 'import secrets; print(secrets.token_hex(32))'`")
    return key.encode("utf-8")


def _shared_file(path: Path) -> bytes:
    """A team's key file: a regular file that users outside the file's group cannot touch."""
    what = f"{KEY_FILE_ENV}={str(path)!r}"
    try:
        info = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{what}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: cannot be read as text ({exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{what}: not a regular file")
    if info.st_mode & 0o007:
        raise ValueError(f"{what}: other users can access it (mode "
                         f"{stat.S_IMODE(info.st_mode):04o}); allow the owner and the team's "
                         "group only (chmod o-rwx)")
    return _checked_text(text, what)


def _read_own(path: Path) -> bytes:
    """The user's key file, refused if anyone else owns it or can read or write it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        uid = my_uid()
        if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid) \
                or info.st_mode & 0o077:
            raise UntrustedKey(
                f"the cache key {path} is not a file of this user's alone (mode "
                f"{stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}): compiling "
                "without the disk cache; remove the file (a new key is made) to use it again")
        text = os.read(fd, 4096).decode("ascii", "replace")
    finally:
        os.close(fd)
    return text.strip().encode("ascii", "replace")


def _make_own(path: Path) -> None:
    """Creates the key file with a fresh random key, mode 0600, atomically: a process that
    loses a race to create it uses the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cache-key-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: never replaces a key in use
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_secret() -> CacheSecret:
    """The key in force: GRAPHC_CACHE_KEY, else GRAPHC_CACHE_KEY_FILE, else the user's own
    (created on first use). A malformed shared key raises ValueError naming the variable;
    an own key that cannot be trusted or made raises UntrustedKey."""
    text = os.environ.get(KEY_ENV)
    if text is not None:
        return CacheSecret(_checked_text(text, KEY_ENV), KEY_ENV, True)
    file = os.environ.get(KEY_FILE_ENV)
    if file:
        return CacheSecret(_shared_file(Path(file)), f"{KEY_FILE_ENV} ({file})", True)
    path = user_key_path()
    try:
        try:
            key = _read_own(path)
        except FileNotFoundError:
            _make_own(path)
            key = _read_own(path)
    except OSError as exc:
        raise UntrustedKey(f"the cache key {path} cannot be made or read ({exc}): compiling "
                           "without the disk cache") from None
    if len(key) < MIN_KEY_CHARS:
        raise UntrustedKey(f"the cache key {path} is too short: compiling without the disk "
                           "cache; remove the file (a new key is made) to use it again")
    return CacheSecret(key, str(path), False)
