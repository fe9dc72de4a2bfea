"""Writing a file so that readers see the old contents or the new, never a half-written
file: the data goes to a temporary file in the same folder, is flushed to disk, and is
renamed over the target (a rename within one file system is atomic)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def write_atomic(path: PathLike, data: Union[bytes, str], encoding: str = "utf-8") -> Path:
    """Writes `data` (bytes, or text in `encoding`) to `path` atomically; on any error the
    temporary file is removed and the target is left as it was. Returns the path."""
    target = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file 0600; a written picture or page should get the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target
