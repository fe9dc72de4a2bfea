"""User text inside Graphviz DOT strings: any name (quotes, brackets, braces, backslashes,
newlines, control characters, markup) ends up as the same characters in the picture."""
from __future__ import annotations

import re

# Characters that are not text (control codes; Graphviz and XML reject most of them): shown
# as \xNN instead.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
# Graphviz reads entities in labels before their escapes (\n, \l, \\): a backslash written
# as the entity pair &#92;&#92; reaches the escape pass as `\\`, which it draws as one `\`,
# and no backslash is ever left in the DOT text to escape the closing quote.
_LABEL_BACKSLASH = "&#92;&#92;"


def _plain(text: str) -> str:
    """Text without lone surrogates (a file name's undecodable bytes), which no encoder takes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def dot_label(text: str) -> str:
    """`text` for the inside of a quoted DOT label or tooltip; newlines become line breaks."""
    text = _plain(text).replace("&", "&amp;").replace("\\", _LABEL_BACKSLASH)
    text = _CONTROL.sub(lambda m: f"{_LABEL_BACKSLASH}x{ord(m.group()):02x}", text)
    return text.replace('"', '\\"').replace("\n", "\\n")


def dot_id(text: str) -> str:
    """`text` for the inside of a quoted DOT identifier (a graph's name), which Graphviz
    copies into the SVG as it is, with no escape pass of its own."""
    text = _plain(text).replace("&", "&amp;").replace("\\", "&#92;")
    text = _CONTROL.sub(lambda m: f"&#92;x{ord(m.group()):02x}", text)
    return text.replace('"', '\\"').replace("\n", "&#92;n")
