"""Written pictures, pages and listings replace the old file whole or not at all."""
import os
import stat

import pytest

import graphc as gc
from graphc.runtime import atomic_file
from graphc.runtime.atomic_file import write_atomic


def test_writes_text_and_bytes_with_the_usual_mode(tmp_path):
    write_atomic(tmp_path / "a.txt", "héllo")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "page.html"
    target.write_text("old page")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_file.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new page")
    assert target.read_text() == "old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


def test_explore_writes_through_it(tmp_path, monkeypatch):
    calls = []
    real = atomic_file.os.replace
    monkeypatch.setattr(atomic_file.os, "replace", lambda a, b: (calls.append(b), real(a, b)))
    x = gc.placeholder((3,), name="x")
    f = gc.function([x], gc.sum(x * x))
    out = gc.explore(f, tmp_path / "f.html")
    # (os.replace is patched for every module: the compile cache renames its entries too)
    assert out in calls and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
