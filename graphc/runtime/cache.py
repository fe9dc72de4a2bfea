"""The compile cache on disk: native code keyed by one key (the program's structural
fingerprint, the call-time sizes, the backend's id and its code hash, and the settings that
change the code). Writes are atomic (temporary file, fsync, rename). Every entry is signed: an
HMAC-SHA-256 over its header and code with the user's secret key (graphc/runtime/
cache_secret.py), so an entry that someone without the key wrote or changed is never loaded;
it is removed (when it is ours) and rebuilt, like a corrupt or mismatched one. Nothing is
unpickled: an entry is a JSON header, its MAC and raw bytes.

GRAPHC_CACHE_DIR sets the folder (default: $XDG_CACHE_HOME/graphc or ~/.cache/graphc);
GRAPHC_CACHE=0 switches the cache off. A folder other users can write is not used
(graphc/runtime/cache_folder.py)."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from graphc.runtime.cache_folder import trusted_folder, warn_once
from graphc.runtime.cache_secret import CacheSecret, UntrustedKey, load_secret, my_uid

MAGIC = b"GRAPHC-OBJECT-3\n"  # 3: signed (HMAC) entries; 2 had a plain SHA-256
ENTRY = re.compile(r"[0-9a-f]{64}\.gco")  # an entry's file name: its key and a suffix


def default_dir() -> Path | None:
    if os.environ.get("GRAPHC_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    explicit = os.environ.get("GRAPHC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphc"


def cache_key(structure: str, sizes: tuple, backend_id: str, code: str,
              settings: Any = ()) -> str:
    """The one key of a compiled program: `structure` (graphc.fingerprint.graph_fingerprint),
    the input `sizes`, `backend_id` (the backend's name and target: host, toolchain),
    `code` (graphc.runtime.code_hash) and the compile `settings` that change the code (a
    repr-able value: passes, threads, schedule policy)."""
    text = repr((structure, sizes, backend_id, code, settings))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_files(folder: Path) -> list[Path]:
    """The cache entries in `folder` (graphc's files only: no temporary file of a writer
    at work, nothing else the folder holds); none when it does not exist."""
    try:
        return sorted(p for p in folder.iterdir() if ENTRY.fullmatch(p.name) and p.is_file())
    except OSError:
        return []


def entry_mac(key: bytes, header: bytes, payload: bytes) -> bytes:
    """The MAC an entry carries (hex): over the magic line, the header and the code, since a
    changed layout is as dangerous as changed code (it says where native code may write)."""
    return hmac.new(key, MAGIC + header + b"\n" + payload, hashlib.sha256).hexdigest().encode()


class CompileCache:
    """A folder of signed entries, each a key's native code and metadata. `folder` None,
    a folder others can write, or a key that cannot be trusted: no caching. `secret`: the
    signing key (default: graphc.runtime.cache_secret.load_secret())."""

    def __init__(self, folder: Path | None, secret: CacheSecret | None = None) -> None:
        self.folder: Path | None = None
        self._key = b""
        self._group_readable = False
        if folder is None:
            return
        if secret is None:
            try:
                secret = load_secret()
            except UntrustedKey as exc:
                warn_once(str(exc))
                return
        self.folder = trusted_folder(Path(folder), secret.shared)
        self._key = secret.key
        self._group_readable = secret.shared  # the team's members read each other's entries

    @staticmethod
    def _path(folder: Path, key: str) -> Path:
        return folder / f"{key}.gco"

    def get(self, key: str) -> tuple[bytes, dict] | None:
        """The object code and metadata stored under `key`, or None (missing, corrupt, or
        not signed with this user's key: then removed if it is ours, to be rebuilt)."""
        if self.folder is None:
            return None
        path = self._path(self.folder, key)
        try:
            with open(path, "rb") as fh:
                info = os.fstat(fh.fileno())
                data = fh.read()
        except OSError:
            return None
        entry = self._verified(key, data)
        if entry is None:
            self._discard(path, info)
        return entry

    def _verified(self, key: str, data: bytes) -> tuple[bytes, dict] | None:
        try:
            if not data.startswith(MAGIC):
                return None
            header_end = data.index(b"\n", len(MAGIC))
            mac_end = data.index(b"\n", header_end + 1)
            header_bytes = data[len(MAGIC):header_end]
            payload = data[mac_end + 1:]
            # Nothing of the entry is parsed before its MAC is checked.
            if not hmac.compare_digest(data[header_end + 1:mac_end],
                                       entry_mac(self._key, header_bytes, payload)):
                return None
            header = json.loads(header_bytes)
            if header.get("key") != key or header.get("length") != len(payload):
                return None
            meta = header.get("meta", {})
            if not isinstance(meta, dict):
                return None
            return payload, meta
        except (ValueError, json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            return None

    @staticmethod
    def _discard(path: Path, info: os.stat_result) -> None:
        """Removes a rejected entry if it is this user's and still the file that was read
        (a writer may have put a good one in its place meanwhile)."""
        uid = my_uid()
        try:
            now = os.stat(path, follow_symlinks=False)
            if (now.st_ino, now.st_dev) == (info.st_ino, info.st_dev) and \
                    (uid is None or now.st_uid == uid):
                os.unlink(path)
        except OSError:
            pass

    def put(self, key: str, payload: bytes, meta: dict, durable: bool = True) -> bool:
        """Stores a signed entry atomically; False (and nothing written) when the folder is
        not writable. Concurrent writers of one key each rename a complete file: last wins.
        durable=False skips the fsync (4-6 ms an entry here, against 0.2-0.3 ms): a crash
        of the machine may then leave the entry cut short or empty, which its MAC turns
        into a miss; for the many small per-kernel entries of one compile."""
        if self.folder is None:
            return False
        header = json.dumps({"key": key, "length": len(payload), "meta": meta}).encode()
        mac = entry_mac(self._key, header, payload)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(MAGIC + header + b"\n" + mac + b"\n" + payload)
                    fh.flush()
                    if self._group_readable:
                        os.fchmod(fh.fileno(), 0o640)
                    if durable:
                        os.fsync(fh.fileno())
                os.replace(tmp, self._path(self.folder, key))
            except BaseException:
                with _suppress():
                    os.unlink(tmp)
                raise
            return True
        except OSError:
            return False


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True
