"""gc.explore: the explorer data, the script and the style inlined into one HTML file."""
from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

from graphc.explore.data import explorer_data
from graphc.runtime.atomic_file import write_atomic

# Inside <script> only these characters can end the element or start markup: written as
# JSON escapes they stay the same string to JSON.parse and can never close the tag.
_SCRIPT_SAFE = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                0x2028: "\\u2028", 0x2029: "\\u2029"}


def script_json(value: Any) -> str:
    """`value` as JSON that is safe to embed in a <script> element."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).translate(_SCRIPT_SAFE)


def _asset(name: str) -> str:
    return resources.files("graphc.explore").joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(script: str, style: str) -> str:
    """The page's policy: nothing from the network or any other file (no fetch, image, font,
    frame, form or base URL), and of inline code only the page's own script and style, named
    by their hashes, so markup smuggled into the page could not run even if it got in."""
    return ("default-src 'none'; "
            f"script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
            "img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'")


def _inline(text: str, tag: str) -> str:
    """An asset's text for an inline <script> or <style>: checked that nothing in it could
    end the element early or open a comment the parser would treat specially."""
    lowered = text.lower()
    if f"</{tag}" in lowered or "<!--" in lowered:
        raise ValueError(f"explorer asset for <{tag}> holds '</{tag}' or '<!--'")
    return text


def explorer_html(target: Any, title: str | None = None) -> str:
    """The explorer page for `target` (see gc.explore) as one HTML text."""
    data = explorer_data(target, title)
    style = "\n" + _inline(_asset("explorer.css"), "style")
    script = "\n" + _inline(_asset("explorer.js"), "script")
    policy = html.escape(content_security_policy(script, style))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        f"<title>{html.escape(str(data['title']))}</title>\n"
        f"<style>{style}</style>\n</head>\n<body>\n"
        f"<script type=\"application/json\" id=\"graphc-data\">{script_json(data)}</script>\n"
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def explore(f: Any, path: str | PathLike[str], title: str | None = None) -> Path:
    """Writes one self-contained HTML page (no network, no server) to explore `f`, a
    compiled gc.function: its graph (folded by module scope, forward and gradient apart,
    expand on click; shape, dtype, source line and provenance on hover), each optimization
    pass that changed it as a before/after step, the kernels for the shapes it was called
    with (else its static shapes) and the generated code, each kernel linked to its function
    and to the nodes it computes. A Graph, tensor or list of tensors shows the graph alone.
    The page opens at #view=NAME, #kernel=K, #node=I or #expand. Returns the path written."""
    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"explore: path: expected a file name, got {type(path).__name__}")
    return write_atomic(path, explorer_html(f, title))
