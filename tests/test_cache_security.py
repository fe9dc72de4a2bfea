"""Nothing from disk runs as someone else's code: compile-cache entries are signed with the
user's own key (0600, in their config folder), another key's entries and swapped code are
never loaded, and a cache folder other users can write is refused with one warning."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.runtime import cache_folder
from graphc.runtime.cache import MAGIC, CompileCache
from graphc.runtime.cache_folder import CacheWarning
from graphc.runtime.cache_secret import CacheSecret, load_secret

X = np.linspace(-2, 2, 12).reshape(4, 3).astype(np.float32)


def _run(folder: Path, scale: float = 2.0) -> tuple[dict, Path]:
    """A fresh function compiled with `folder` as its cache: its compile_times and its
    program's entry (a backend may keep more entries beside it, per kernel)."""
    x = gc.placeholder((4, 3), name="x")
    f = gc.function([x], gc.tanh(x) * scale, backend="llvm",
                    backend_options={"cache_dir": str(folder)})
    out = f(X)
    np.testing.assert_allclose(out, np.tanh(X) * scale, rtol=1e-6)
    return f.compile_times, folder / f"{f._exe.last.key}.gco"


def _user(monkeypatch, home: Path) -> None:
    """Act as another user: another config folder, so another key."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _split(data: bytes) -> tuple[bytes, bytes, bytes]:
    header_end = data.index(b"\n", len(MAGIC))
    mac_end = data.index(b"\n", header_end + 1)
    return data[len(MAGIC):header_end], data[header_end + 1:mac_end], data[mac_end + 1:]


def test_a_cache_copied_from_another_user_is_never_loaded(tmp_path, monkeypatch):
    _user(monkeypatch, tmp_path / "alice-config")
    alice = tmp_path / "alice-cache"
    assert _run(alice)[0]["cached"] is False
    assert _run(alice)[0]["cached"] is True  # her own entry: loaded
    planted = {p.name: p.read_bytes() for p in alice.glob("*.gco")}
    bob = tmp_path / "bob-cache"
    shutil.copytree(alice, bob)
    _user(monkeypatch, tmp_path / "bob-config")
    times, entry = _run(bob)
    assert times["cached"] is False  # rebuilt, not loaded
    assert entry.read_bytes() != planted[entry.name]  # replaced by one signed with his key
    for p in bob.glob("*.gco"):  # no entry of hers is left to load
        assert p.read_bytes() != planted.get(p.name)
    assert _run(bob)[0]["cached"] is True


def test_swapped_code_with_a_recomputed_plain_digest_is_rejected(tmp_path):
    """What the SHA-256 of format 2 accepted: other code under a digest made to match."""
    cache = CompileCache(tmp_path)
    assert cache.put("a" * 64, b"\x7fELF honest code", {"n": 1})
    entry = tmp_path / ("a" * 64 + ".gco")
    header, _, payload = _split(entry.read_bytes())
    evil = b"\x7fELF someone else's code"
    head = json.loads(header)
    head["length"] = len(evil)
    header = json.dumps(head).encode()
    digest = hashlib.sha256(header + b"\n" + evil).hexdigest().encode()
    entry.write_bytes(MAGIC + header + b"\n" + digest + b"\n" + evil)
    assert cache.get("a" * 64) is None
    assert not entry.exists()  # ours: removed, so the next compile writes a good one


def test_an_entry_signed_with_another_key_is_refused_and_only_ours_removed(tmp_path,
                                                                           monkeypatch):
    mine = CompileCache(tmp_path, CacheSecret(b"k" * 32, "test", False))
    theirs = CompileCache(tmp_path, CacheSecret(b"t" * 32, "test", False))
    assert theirs.put("b" * 64, b"code", {})
    assert theirs.get("b" * 64) == (b"code", {})
    entry = tmp_path / ("b" * 64 + ".gco")
    monkeypatch.setattr("graphc.runtime.cache.my_uid", lambda: os.getuid() + 1)
    assert mine.get("b" * 64) is None
    assert entry.exists()  # another user's file: left where it is
    monkeypatch.undo()
    assert mine.get("b" * 64) is None
    assert not entry.exists()


def test_a_swapped_entry_is_rebuilt_by_the_compiler(tmp_path):
    """Two programs' entries; one's code moved into the other's entry with a recomputed
    plain digest: the function compiles again and gives its own numbers."""
    _, target = _run(tmp_path, 2.0)
    _, other = _run(tmp_path, 3.0)
    header, _, _ = _split(target.read_bytes())
    _, _, code = _split(other.read_bytes())
    head = json.loads(header)
    head["length"] = len(code)
    header = json.dumps(head).encode()
    digest = hashlib.sha256(header + b"\n" + code).hexdigest().encode()
    target.write_bytes(MAGIC + header + b"\n" + digest + b"\n" + code)
    times, _ = _run(tmp_path, 2.0)  # _run checks the numbers are tanh(x) * 2
    assert times["cached"] is False
    assert _run(tmp_path, 2.0)[0]["cached"] is True


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_a_folder_others_can_write_is_refused_with_one_warning(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _run(shared)[0]["cached"] is False  # still runs, with the right numbers
        assert _run(shared)[0]["cached"] is False
    ours = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert str(shared) in str(ours[0].message)
    assert f"{mode:04o}" in str(ours[0].message)
    assert list(shared.iterdir()) == []  # nothing written there


def test_which_folders_are_trusted(tmp_path, monkeypatch):
    def check(mode: int, shared: bool, owner_is_me: bool = True) -> bool:
        folder = tmp_path / f"f{mode:o}{shared}{owner_is_me}"
        folder.mkdir()
        os.chmod(folder, mode)
        uid = os.getuid() if owner_is_me else os.getuid() + 1
        monkeypatch.setattr(cache_folder, "my_uid", lambda: uid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)
            return cache_folder.trusted_folder(folder, shared) == folder
    assert check(0o700, False) and check(0o755, False)
    assert not check(0o775, False)  # the group could plant entries
    assert check(0o2770, True)  # ...unless the team shares a key
    assert not check(0o777, False) and not check(0o777, True)
    assert not check(0o700, False, owner_is_me=False)
    assert check(0o770, True, owner_is_me=False)  # a team folder another member made


def test_a_new_key_is_0600_and_the_new_folders_0700(tmp_path, monkeypatch):
    _user(monkeypatch, tmp_path / "config")
    folder = tmp_path / "cache" / "graphc"
    cache = CompileCache(folder)
    assert cache.put("c" * 64, b"code", {})
    key = tmp_path / "config" / "graphc" / "cache-key"
    assert _mode(key) == 0o600
    assert _mode(key.parent) == 0o700
    assert _mode(folder) == 0o700
    assert _mode(folder / ("c" * 64 + ".gco")) == 0o600
    assert not any(p.name == "cache-key" for p in folder.rglob("*"))  # never beside entries
    first = load_secret().key
    assert load_secret().key == first and len(first) == 64  # made once, then reused


def test_a_key_file_others_can_read_is_not_used(tmp_path, monkeypatch):
    _user(monkeypatch, tmp_path / "config")
    load_secret()
    key = tmp_path / "config" / "graphc" / "cache-key"
    os.chmod(key, 0o644)
    with pytest.warns(CacheWarning, match="cache-key"):
        cache = CompileCache(tmp_path / "cache")
    assert cache.folder is None and not cache.put("d" * 64, b"code", {})


def test_a_team_shares_a_cache_through_a_shared_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_KEY", "team-secret-" + "0" * 20)
    _user(monkeypatch, tmp_path / "alice")
    assert CompileCache(tmp_path / "team").put("e" * 64, b"code", {"k": 1})
    assert _mode(tmp_path / "team" / ("e" * 64 + ".gco")) == 0o640  # the team reads it
    _user(monkeypatch, tmp_path / "bob")
    assert CompileCache(tmp_path / "team").get("e" * 64) == (b"code", {"k": 1})
    assert not (tmp_path / "alice").exists()  # no own key was made
    monkeypatch.delenv("GRAPHC_CACHE_KEY")
    assert CompileCache(tmp_path / "team").get("e" * 64) is None  # bob's own key: refused


def test_a_key_file_a_team_shares(tmp_path, monkeypatch):
    file = tmp_path / "team.key"
    file.write_text("x" * 40 + "\n")
    os.chmod(file, 0o640)
    monkeypatch.setenv("GRAPHC_CACHE_KEY_FILE", str(file))
    secret = load_secret()
    assert secret.key == b"x" * 40 and secret.shared
    os.chmod(file, 0o644)
    with pytest.raises(ValueError, match="GRAPHC_CACHE_KEY_FILE=.*other users"):
        load_secret()
    monkeypatch.setenv("GRAPHC_CACHE_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="GRAPHC_CACHE_KEY_FILE=.*no such file"):
        load_secret()


@pytest.mark.parametrize("value", ["", "short", " " * 40])
def test_a_short_shared_key_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("GRAPHC_CACHE_KEY", value)
    with pytest.raises(ValueError, match="GRAPHC_CACHE_KEY: .*at least 16 characters"):
        load_secret()


def test_cache_info_says_which_key_signs_and_whether_the_folder_is_used(tmp_path, capsys,
                                                                         monkeypatch):
    from graphc.cli.main import main
    _user(monkeypatch, tmp_path / "config")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert main(["cache", "info", "--dir", str(shared)]) == 0
    out = capsys.readouterr().out
    assert "made on the first compile" in out and "used: no: other users can write" in out
    assert not (tmp_path / "config").exists()  # info makes no key
    monkeypatch.setenv("GRAPHC_CACHE_KEY", "k" * 32)
    os.chmod(shared, 0o770)
    assert main(["cache", "info", "--dir", str(shared)]) == 0
    out = capsys.readouterr().out
    assert "key: GRAPHC_CACHE_KEY (a team's key)" in out and "used: yes" in out


@pytest.mark.slow
def test_processes_making_the_key_at_once_agree_on_it(tmp_path):
    """The key file appears whole or not at all: racing first users all end with one key."""
    import subprocess
    import sys
    code = ("from graphc.runtime.cache_secret import load_secret\n"
            "print(load_secret().key.decode())\n")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    keys = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        keys.append(out.strip())
    assert len(set(keys)) == 1 and len(keys[0]) == 64
    assert (tmp_path / "graphc" / "cache-key").read_text().strip() == keys[0]
    assert [p.name for p in (tmp_path / "graphc").iterdir()] == ["cache-key"]  # no leftovers
