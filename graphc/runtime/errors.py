"""The status protocol: native code returns 0, or 1 + the index of the kernel that failed;
the caller turns that into the IndexError or ValueError the numpy backend would raise."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from graphc.errors import bad_index, index_error_message  # noqa: F401 (re-exported)
from graphc.runtime.layout import Layout


def status_of(kernel: int) -> int:
    """The status word native code returns when kernel number `kernel` fails."""
    return kernel + 1


def raise_for_status(status: int, layout: Layout, args: Sequence[np.ndarray]) -> None:
    """Raises the error a nonzero status stands for: the failing kernel's message (which
    names the user's line), with the offending index when the indices were an argument."""
    if not status:
        return
    kernel = status - 1
    message = layout.errors.get(kernel, f"native kernel {kernel} failed")
    if kernel in layout.value_errors:
        raise ValueError(message)
    where = layout.index_args.get(kernel)
    bad = bad_index(args[where[0]], *where[1:]) if where is not None else None
    if bad is not None:  # name the value, as the numpy backend does
        message = message.replace("an index", f"index {bad}", 1)  # (index_error_message's)
    raise IndexError(message)
