"""Text for a terminal: control characters and direction overrides that a name, a path or a
message could carry are shown as escapes, never sent to the terminal to act on."""
from __future__ import annotations

import re

# C0 and C1 controls but tab and newline (escape sequences can recolour, retitle or clear a
# terminal; a carriage return can overwrite a line), and the bidirectional overrides and
# isolates that make text read differently from what it is.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` with every unsafe character written as a Python escape (\\x1b, \\u202e)."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
