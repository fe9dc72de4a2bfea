"""The compile cache on disk: native object code keyed by everything it depends on (the
program's structural fingerprint and input shapes, the host CPU and its features,
llvmlite/LLVM and graphc's code generator).
Writes are atomic (temporary file, fsync, rename); an entry is checked (magic, key, length,
SHA-256 of header and code) before use, and a corrupt or mismatched one is ignored and
rebuilt. Nothing is unpickled: an entry is a JSON header, its digest and raw bytes.

GRAPHC_CACHE_DIR sets the folder (default: $XDG_CACHE_HOME/graphc or ~/.cache/graphc);
GRAPHC_CACHE=0 switches the cache off."""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path

MAGIC = b"GRAPHC-OBJECT-2\n"
_SOURCES = ("codegen.py", "scalar.py", "gemm.py", "loops.py", "vector_abi.py", "jit.py",
            "cache.py", "runtime.py", "parallel.py", "threads.py",
            "adaptive.py", "layout.py")
_BUILTIN_DEFINITIONS = ("graphc.ops.elementwise", "graphc.symbolic")


def default_dir() -> Path | None:
    if os.environ.get("GRAPHC_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    explicit = os.environ.get("GRAPHC_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "graphc"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the code generator itself, so any change to it invalidates old entries."""
    import llvmlite
    import llvmlite.binding as llvm

    import graphc
    from graphc.backends.llvm.jit import host_description
    h = hashlib.sha256()
    folder = Path(__file__).parent
    for name in _SOURCES:
        path = folder / name
        if path.exists():
            h.update(path.read_bytes())
    for module in _BUILTIN_DEFINITIONS:  # the built-in ops' formulas the scalar code prints
        h.update(Path(importlib.import_module(module).__file__).read_bytes())
    h.update(f"{llvmlite.__version__}|{llvm.llvm_version_info}|{graphc.__version__}|"
             f"{host_description()}".encode())
    return h.hexdigest()


def cache_key(schedule_text: str) -> str:
    return hashlib.sha256((code_fingerprint() + "\n" + schedule_text).encode()).hexdigest()


class CompileCache:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.gco"

    def get(self, key: str) -> tuple[bytes, dict] | None:
        """The object code and metadata stored under `key`, or None (missing or corrupt)."""
        if self.folder is None:
            return None
        try:
            data = self._path(key).read_bytes()
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
                os.replace(tmp, self._path(key))
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
