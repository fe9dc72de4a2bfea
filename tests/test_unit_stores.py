"""A compile's new units are written to the cache side by side (each write waits on its
fsync): every entry is on disk, complete, when the writes are waited for, and a write that
fails raises in the compiling thread, as it did when the units were written one by one."""
from __future__ import annotations

import hashlib

import pytest

from graphc.backends.llvm import kernel_cache, processes
from graphc.runtime.cache import CompileCache


def _stores(n: int) -> list[tuple[str, bytes, list[str], list[str]]]:
    return [(hashlib.sha256(str(i).encode()).hexdigest(), bytes([i]) * (1000 + i),
             ["team"] if i % 2 else [], [f"kernel_{i}"]) for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 2, 17])
def test_every_entry_is_stored_when_the_writes_are_waited_for(tmp_path, n):
    disk = CompileCache(tmp_path)
    stores = _stores(n)
    processes._store_units(disk, stores)()
    for key, obj, flags, functions in stores:
        payload, meta = disk.get(key)
        assert payload == obj
        assert meta == {"flags": flags, "functions": functions}
    assert not list(tmp_path.glob(".tmp-*"))  # (no partial file left)


def test_a_failed_write_raises_when_waited_for(tmp_path, monkeypatch):
    disk = CompileCache(tmp_path)
    stores = _stores(5)
    real = kernel_cache.store_unit

    def store(disk_, key, *rest):
        if key == stores[3][0]:
            raise RuntimeError("disk on fire")
        real(disk_, key, *rest)
    monkeypatch.setattr(kernel_cache, "store_unit", store)
    wait = processes._store_units(disk, stores)
    with pytest.raises(RuntimeError, match="disk on fire"):
        wait()
    assert disk.get(stores[0][0]) is not None

