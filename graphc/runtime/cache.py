"""The compile cache on disk: native code keyed by one key (the program's structural
fingerprint, the call-time sizes, the backend's id and its code hash, and the settings that
change the code). Writes are atomic (temporary file, fsync, rename); an entry is checked
(magic, key, length, SHA-256 of header and code) before use, and a corrupt or mismatched one
is ignored and rebuilt. Nothing is unpickled: an entry is a JSON header, its digest and raw
bytes.

GRAPHC_CACHE_DIR sets the folder (default: $XDG_CACHE_HOME/graphc or ~/.cache/graphc);
GRAPHC_CACHE=0 switches the cache off."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

MAGIC = b"GRAPHC-OBJECT-2\n"
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


class CompileCache:
    """A folder of entries, each a key's native code and metadata (None: no caching)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @staticmethod
    def _path(folder: Path, key: str) -> Path:
        return folder / f"{key}.gco"

    def get(self, key: str) -> tuple[bytes, dict] | None:
        """The object code and metadata stored under `key`, or None (missing or corrupt)."""
        if self.folder is None:
            return None
        try:
            data = self._path(self.folder, key).read_bytes()
        except OSError:
            return None
        try:
            if not data.startswith(MAGIC):
                return None
            header_end = data.index(b"\n", len(MAGIC))
            digest_end = data.index(b"\n", header_end + 1)
            header_bytes = data[len(MAGIC):header_end]
            payload = data[digest_end + 1:]
            # The digest covers the header too: a damaged layout is as dangerous as damaged
            # code (it says where native code may write).
            digest = hashlib.sha256(header_bytes + b"\n" + payload).hexdigest()
            if data[header_end + 1:digest_end].decode("ascii") != digest:
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

    def put(self, key: str, payload: bytes, meta: dict) -> bool:
        """Stores an entry atomically; False (and nothing written) when the folder is not
        writable. Concurrent writers of one key each rename a complete file: last wins."""
        if self.folder is None:
            return False
        header = json.dumps({"key": key, "length": len(payload), "meta": meta}).encode()
        digest = hashlib.sha256(header + b"\n" + payload).hexdigest().encode()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(MAGIC + header + b"\n" + digest + b"\n" + payload)
                    fh.flush()
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
