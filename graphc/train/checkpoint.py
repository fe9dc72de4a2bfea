"""Checkpoints: parameters (and optimizer state) to an .npz file, checked on the way back.

The file is an ordinary .npz (a zip of .npy arrays, readable by
``np.load(path, allow_pickle=False)``): one ``<name>.npy`` member per parameter plus
``__graphc_checkpoint__.npy``, a uint8 array holding a JSON manifest (format, version, and each
entry's name, shape, dtype and SHA-256). Nothing is ever pickled. ``load`` validates the whole
file against the manifest and against the target parameters before it sets any value, so a
corrupt, truncated or mismatched file raises ``CheckpointError`` (a ValueError) and leaves every
parameter as it was. ``save`` writes a temporary file in the same folder, fsyncs it and renames
it over the old one, so a crash mid-save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zipfile
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from graphc.frontends.tensor import Parameter
from graphc.nn.module import Module

FORMAT = "graphc-checkpoint"
VERSION = 1
MANIFEST = "__graphc_checkpoint__"
_NPY_VERSIONS = {(1, 0): np.lib.format.read_array_header_1_0,
                 (2, 0): np.lib.format.read_array_header_2_0}


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, truncated, or does not match the parameters."""


# -- naming ---------------------------------------------------------------------------------

def _named(params: Any, what: str, arrays_ok: bool) -> dict[str, Any]:
    """{name: Parameter (or array, when arrays_ok)} from a gc.nn Module (named by the module
    tree: module.named_variables()), a list of Parameters (named by their own names) or a
    mapping {name: Parameter}; names must be unique."""
    if isinstance(params, Module):
        return dict(params.named_variables())
    if isinstance(params, Parameter):
        params = [params]
    if isinstance(params, Mapping):
        items = []
        for name, value in params.items():
            if not isinstance(name, str):
                raise TypeError(f"{what}: dict keys must be names (str), got {name!r}")
            if not isinstance(value, Parameter):
                if not arrays_ok:
                    raise TypeError(f"{what}: {name!r} must be a gc.Parameter, "
                                    f"got {type(value).__name__}")
                array = np.asarray(value)
                if array.dtype.hasobject or array.dtype.kind not in "biuf":
                    raise TypeError(f"{what}: {name!r} has dtype {array.dtype}; checkpoints "
                                    "hold bool, integer and float arrays")
                value = array
            items.append((name, value))
    else:
        if isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
            raise TypeError(f"{what}: expected a list of gc.Parameter or a dict "
                            f"{{name: parameter}}, got {type(params).__name__}")
        items = []
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{what}: item {i} is a {type(p).__name__}, not a gc.Parameter "
                                "(pass a dict {name: array} to save plain arrays)")
            items.append((p.storage.name, p))
    out: dict[str, Any] = {}
    for name, value in items:
        if not name or "\0" in name:
            raise ValueError(f"{what}: {name!r} is not a usable parameter name")
        if name == MANIFEST:
            raise ValueError(f"{what}: the name {MANIFEST!r} is reserved for the manifest")
        if name in out:
            old = out[name]
            if isinstance(old, Parameter) and isinstance(value, Parameter) \
                    and old.storage is value.storage:
                continue  # the same parameter listed twice: harmless
            raise ValueError(f"{what}: two different parameters are named {name!r}; names must "
                             "be unique (gc.parameter(..., name=...), or pass a dict "
                             "{name: parameter})")
        out[name] = value
    return out


def _member(name: str) -> str:
    """The zip member name np.savez would use for an array called `name`."""
    return zipfile.ZipInfo(name + ".npy").filename


@contextmanager
def _locked(params: Iterable[Parameter]) -> Iterator[None]:
    """Holds every parameter's lock (in uid order, as compiled functions take them), so a
    save sees one consistent state and a load sets all values between two steps."""
    storages = sorted({p.storage for p in params}, key=lambda s: s.uid)
    with ExitStack() as stack:
        for s in storages:
            stack.enter_context(s.lock)
        yield


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


# -- saving ---------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _new_file_mode(path: str) -> int:
    """Keep an existing checkpoint's permissions; a new one gets 0o666 minus the umask
    (mkstemp would make it 0o600)."""
    with suppress(OSError):
        return os.stat(path).st_mode & 0o7777
    umask = 0o022
    with suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return 0o666 & ~umask


def _fsync_dir(folder: str) -> None:
    """Makes the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: str | os.PathLike, params: Any, extra: Mapping[str, Any] | None = None) -> str:
    """Writes parameters to an .npz checkpoint at `path` (atomically: a crash mid-save leaves
    the old file). `params`: a gc.nn Module (its parameters and state, named by the module
    tree as in module.state_dict(): "0.W", "block1.bn.running_mean"; the same names whatever
    else the process built), a list of gc.Parameter (named by their own names, which must be
    unique; optimizer state such as momentum buffers are parameters too) or a dict
    {name: parameter or array}. `extra`: JSON-serializable metadata (epoch, step, config),
    returned by `load`. Returns the path."""
    path = os.fspath(path)
    named = _named(params, "checkpoint save", arrays_ok=True)
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"checkpoint save: extra must be a dict, got {type(extra).__name__}")
    with _locked(v for v in named.values() if isinstance(v, Parameter)):
        arrays = {name: (v.storage.array.copy() if isinstance(v, Parameter)
                         else np.array(v, order="C", copy=True))
                  for name, v in named.items()}
    members: dict[str, str] = {}
    for name in arrays:
        member = _member(name)
        if member in members.values() or member == _member(MANIFEST):
            raise ValueError(f"checkpoint save: the name {name!r} collides with another entry "
                             "once stored in the archive; rename it")
        members[name] = member
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "entries": [{"name": name, "member": members[name], "shape": list(a.shape),
                     "dtype": a.dtype.str, "sha256": _sha256(a)}
                    for name, a in arrays.items()],
        "extra": dict(extra) if extra is not None else {},
    }
    try:
        text = json.dumps(manifest, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint save: extra must be JSON-serializable: {exc}") from None
    blob = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    folder = os.path.dirname(os.path.abspath(path))
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED,
                                 allowZip64=True) as zf:
                for name, array in arrays.items():
                    with zf.open(members[name], "w", force_zip64=True) as out:
                        np.lib.format.write_array(out, array, allow_pickle=False)
                with zf.open(_member(MANIFEST), "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, blob, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return path


# -- reading --------------------------------------------------------------------------------

@contextmanager
def _reading(path: str, what: str) -> Iterator[None]:
    """Turns whatever a damaged archive raises (zip, zlib, npy header, JSON, EOF) into one
    CheckpointError that names the file and the entry."""
    try:
        yield
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"checkpoint {path!r}: {what}: implausible size "
                              "(the file is corrupt)") from None
    except Exception as exc:  # noqa: BLE001 - any failure here means a damaged file
        raise CheckpointError(f"checkpoint {path!r}: cannot read {what} ({type(exc).__name__}: "
                              f"{exc}); the file is truncated or corrupt") from exc


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, what: str) -> np.ndarray:
    """One .npy member, never unpickling, and never allocating more than the member holds."""
    with _reading(path, what), zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_VERSIONS:
            raise CheckpointError(f"checkpoint {path!r}: {what}: unsupported .npy version "
                                  f"{version}")
        shape, fortran, dtype = _NPY_VERSIONS[version](f)
        if dtype.hasobject:
            raise CheckpointError(f"checkpoint {path!r}: {what}: holds Python objects "
                                  "(pickled data is never loaded)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise CheckpointError(f"checkpoint {path!r}: {what}: header promises {nbytes} bytes,"
                                  f" the entry holds {info.file_size}; the file is corrupt")
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"checkpoint {path!r}: {what}: ends after {len(data)} of "
                                  f"{nbytes} bytes; the file is truncated")
        if f.read():  # also reaches the end of the member, where zipfile checks its CRC
            raise CheckpointError(f"checkpoint {path!r}: {what}: trailing bytes after the "
                                  "array; the file is corrupt")
        array = np.frombuffer(data, dtype=dtype)
        return array.reshape(shape, order="F" if fortran else "C").copy(order="C")


def _check_manifest(manifest: Any, path: str) -> list[dict]:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path!r}: invalid manifest: {why}")

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise bad("not a graphc checkpoint manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad(f"version {version!r} is not an int")
    if version > VERSION:
        raise CheckpointError(f"checkpoint {path!r}: written in format version {version} by a "
                              f"newer graphc; this one reads versions up to {VERSION}")
    entries = manifest.get("entries")
    if not isinstance(entries, list):
        raise bad("'entries' is not a list")
    seen = set()
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str)
                and isinstance(e.get("member"), str) and isinstance(e.get("dtype"), str)
                and isinstance(e.get("sha256"), str) and isinstance(e.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                        for d in e["shape"])):
            raise bad(f"malformed entry {e!r}")
        if e["name"] in seen:
            raise bad(f"parameter {e['name']!r} is listed twice")
        seen.add(e["name"])
        try:
            np.dtype(e["dtype"])
        except TypeError:
            raise bad(f"parameter {e['name']!r} has an unknown dtype {e['dtype']!r}") from None
    if not isinstance(manifest.get("extra", {}), dict):
        raise bad("'extra' is not a dict")
    return entries


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads and fully validates a checkpoint: ({name: array}, extra). Raises CheckpointError
    (a ValueError) naming the file and the entry when anything is damaged."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path!r}: not an .npz archive (no zip directory "
                              "found); the file is truncated, corrupt, or not a checkpoint")
    with _reading(path, "the archive"), zipfile.ZipFile(path) as zf:
        infos = {}
        with _reading(path, "the archive's directory"):
            for info in zf.infolist():
                if info.filename in infos:
                    raise CheckpointError(f"checkpoint {path!r}: the entry {info.filename!r} "
                                          "appears twice; the file is corrupt")
                infos[info.filename] = info
        manifest_member = _member(MANIFEST)
        if manifest_member not in infos:
            raise CheckpointError(f"checkpoint {path!r}: no {manifest_member} entry; not a "
                                  "graphc checkpoint (or the file is corrupt)")
        blob = _read_npy(zf, infos[manifest_member], path, "the manifest")
        with _reading(path, "the manifest"):
            if blob.dtype != np.uint8 or blob.ndim != 1:
                raise CheckpointError(f"checkpoint {path!r}: the manifest is not a byte array")
            manifest = json.loads(blob.tobytes().decode("utf-8"))
        entries = _check_manifest(manifest, path)
        listed = {e["member"] for e in entries} | {manifest_member}
        unlisted = sorted(set(infos) - listed)
        if unlisted:
            raise CheckpointError(f"checkpoint {path!r}: entries {unlisted} are not in the "
                                  "manifest; the file was altered or is corrupt")
        arrays = {}
        for e in entries:
            name = e["name"]
            what = f"parameter {name!r}"
            if e["member"] not in infos:
                raise CheckpointError(f"checkpoint {path!r}: {what} is listed in the manifest "
                                      "but its data is missing; the file is corrupt")
            array = _read_npy(zf, infos[e["member"]], path, what)
            if array.shape != tuple(e["shape"]) or array.dtype != np.dtype(e["dtype"]):
                raise CheckpointError(f"checkpoint {path!r}: {what}: stored as "
                                      f"{array.dtype}{list(array.shape)}, the manifest says "
                                      f"{np.dtype(e['dtype'])}{e['shape']}; the file is corrupt")
            if _sha256(array) != e["sha256"]:
                raise CheckpointError(f"checkpoint {path!r}: {what}: its data does not match "
                                      "its SHA-256 checksum; the file is corrupt")
            arrays[name] = array
    return arrays, dict(manifest.get("extra", {}))


def load(path: str | os.PathLike, params: Any, *, strict: bool = True) -> dict[str, Any]:
    """Loads a checkpoint into `params` (a gc.nn Module, matched by its tree names; a list of
    gc.Parameter matched by their names; or a dict {name: parameter}) and returns the `extra`
    metadata saved with it. A file saved from `module.variables()` (a list, so named by the
    parameters' own names, such as "dense1.W") still loads into the module when it holds
    every one of those names; otherwise the error says how the names differ. Every check runs before
    any value is set: a damaged file, a parameter missing from the file, an entry in the file
    with no parameter (unless strict=False), or a shape or dtype mismatch raises
    CheckpointError (a ValueError) naming the file and the parameter, and changes nothing."""
    path = os.fspath(path)
    targets = _named(params, f"checkpoint load {path!r}", arrays_ok=False)
    arrays, extra = load_arrays(path)
    missing = [n for n in targets if n not in arrays]
    if missing and isinstance(params, Module):
        own = {p.storage.name: p for p in targets.values()}
        if len(own) == len(targets) and all(n in arrays for n in own):
            targets, missing = own, []  # saved from module.variables(): its own names
        elif not any(n in arrays for n in targets):
            raise CheckpointError(
                f"checkpoint {path!r}: holds none of the module's names {list(targets)}. A file "
                "saved from a list (such as module.variables()) names parameters by their own "
                "names, which depend on what the process built before: the module's own "
                f"names are {sorted(own)}, the file holds {sorted(arrays)}. Load it "
                "with a dict {name in the file: parameter}, and save with "
                "gc.train.save(path, module) from now on (names from the module tree)")
    if missing:
        raise CheckpointError(f"checkpoint {path!r}: no entry for parameter(s) "
                              f"{missing}; the file holds {sorted(arrays)}")
    surplus = sorted(n for n in arrays if n not in targets)
    if surplus and strict:
        raise CheckpointError(f"checkpoint {path!r}: holds parameter(s) {surplus} that were not "
                              "given to load (pass them too, or strict=False to ignore them)")
    for name, p in targets.items():
        want = p.storage.array
        got = arrays[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(f"checkpoint {path!r}: parameter {name!r} is "
                                  f"{got.dtype}{list(got.shape)} in the file, but the parameter "
                                  f"is {want.dtype}{list(want.shape)}")
    with _locked(targets.values()):
        for name, p in targets.items():
            p.storage.array[...] = arrays[name]  # in place: compiled code keeps its pointer
    return extra


def checkpoint_every(path: str | os.PathLike, params: Any, every: int = 1):
    """A `fit` callback that saves `params` after every `every`-th epoch. `path` may hold
    "{epoch}", e.g. "ckpt-{epoch:03d}.npz"; the extra metadata records the epoch and its mean
    loss. In a job of several processes only rank 0 writes (they hold the same values)."""
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"checkpoint_every: every must be a positive int, got {every!r}")
    _named(params, "checkpoint_every", arrays_ok=True)  # fail now, not after an epoch

    def callback(epoch: int, history: Any) -> None:
        from graphc.distributed import rank
        if epoch % every == 0 and rank() == 0:
            target = os.fspath(path).format(epoch=epoch)
            save(target, params, extra={"epoch": epoch, "loss": history.loss[-1]})
    return callback
