"""Names never become code or markup: the explorer page (HTML, its embedded JSON and its
Content-Security-Policy, in headless Chromium too), SVG/DOT pictures, LaTeX and the command
line's output show any user string as the same characters, and run nothing."""
from __future__ import annotations

import base64
import hashlib
import html
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.cli.main import main
from test_explore import _chromium, _data, _rendered

# The two names, and ones that would announce themselves if they ran: they set the
# title or log to the console, which the browser test watches.
XSS = ["<img src=x onerror=alert(1)>",
       "</script><script>alert(2)</script>",
       "<img src=x onerror=\"document.title='PWNED-img'\">",
       "</script><script>document.title='PWNED-script';console.log('PWNED')</script>",
       "<!--<script>document.title='PWNED-comment'</script>",
       "\"'><svg onload=\"document.title='PWNED-svg'\">",
       "</style><style>body{display:none}</style>"]
# Everything DOT, XML or a shell treats specially, a control character, and a newline.
NASTY = 'a"b\'c<d>e{f}g[h]i|j\\k\\"l&amp;m;n`o$p\x1b[31mq\nr\\'


def _xss_function():
    x = gc.placeholder((3,), name=XSS[5])
    h = x
    for k, name in enumerate(XSS):
        w = gc.parameter(np.full(3, 0.5, np.float32), name=f"{name}.w{k}")
        h = gc.tanh(h * w)
    return gc.function([x], gc.sum(h), backend="numpy")


def _page(tmp_path: Path) -> tuple[Path, str]:
    page = gc.explore(_xss_function(), tmp_path / "xss.html", title=XSS[1])
    return page, page.read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# ---- the explorer page, as text ------------------------------------------------------------

def test_names_are_escaped_in_the_explorer_page(tmp_path):
    _, text = _page(tmp_path)
    # markup appears only as the page's own: two scripts, one style, no image, svg or comment
    assert len(re.findall(r"<script\b", text)) == 2 and text.count("</script>") == 2
    assert text.count("<style>") == 1 and text.count("</style>") == 1
    assert not re.search(r"<(img|svg|iframe|link)\b|<!--", text)
    data = _data(text)
    assert data["title"] == XSS[1]  # JSON gives every name back whole
    scopes = {s["name"] for s in data["graph"]["scopes"]}
    assert set(XSS) <= scopes
    assert f"<title>{html.escape(XSS[1])}</title>" in text


def test_the_page_forbids_the_network_and_any_script_but_its_own(tmp_path):
    _, text = _page(tmp_path)
    head = text[:text.index("</head>")]
    m = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', head)
    assert m is not None
    assert head.index(m.group(0)) < head.index("<style>")  # in force before any content
    policy = dict(d.strip().split(" ", 1) for d in html.unescape(m.group(1)).split(";"))
    assert policy["default-src"] == "'none'"
    for directive in ("img-src", "connect-src", "base-uri", "form-action"):
        assert policy[directive] == "'none'"
    script = re.search(r"<script>(.*?)</script>", text, re.DOTALL).group(1)
    style = re.search(r"<style>(.*?)</style>", text, re.DOTALL).group(1)
    assert policy["script-src"] == _sha256(script)  # the page's script alone, no unsafe-inline
    assert policy["style-src"] == _sha256(style)


# ---- the explorer page, in a browser -------------------------------------------------------

def _open(page: Path) -> tuple[str, list[str]]:
    """The DOM after the scripts ran, and the console's messages (CSP violations included)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
             "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def _title(dom: str) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", dom, re.DOTALL).group(1))


@pytest.mark.slow
def test_hostile_names_render_harmlessly_in_chromium(tmp_path):
    page, text = _page(tmp_path)
    dom, console = _open(page)
    _rendered(dom)  # the page's own script ran to the end, with no error
    assert console == []  # no console message: no error, no CSP violation, no PWNED
    assert _title(dom) == XSS[1]
    assert "PWNED" not in _title(dom)
    assert not re.search(r"<(img|svg:?svg|iframe)\b", dom)  # names stayed text...
    assert html.escape(XSS[0], quote=False) in dom  # ...shown in the scope list
    # Controls: the same names pasted in raw. Without the policy they run (so the watch
    # above can see a script of theirs); with it the browser blocks them and says so.
    raw = "".join(XSS[2:6])
    body = text.index("<body>") + len("<body>")
    planted = tmp_path / "planted.html"
    planted.write_text(text[:body] + raw + text[body:], encoding="utf-8")
    dom, console = _open(planted)
    assert "PWNED" not in _title(dom)
    assert any("Content Security Policy" in line for line in console)
    no_policy = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "",
                       planted.read_text(encoding="utf-8"))
    planted.write_text(no_policy, encoding="utf-8")
    dom, console = _open(planted)
    assert "PWNED" in _title(dom) or any("PWNED" in line for line in console)


# ---- pictures ------------------------------------------------------------------------------

def _svg(dot: str) -> ET.Element:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    done = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return ET.fromstring(done.stdout)  # well-formed XML


def _texts(svg: ET.Element, tag: str) -> list[str]:
    return [e.text or "" for e in svg.iter(f"{{http://www.w3.org/2000/svg}}{tag}")]


def _shown(text: str) -> str:
    """How a name reads in the picture: control characters as \\xNN."""
    return re.sub(r"[\x00-\x09\x0b-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def test_a_name_full_of_quotes_and_brackets_renders_to_svg():
    from graphc.render import render_dot
    x = gc.placeholder((3,), name=NASTY)
    w = gc.parameter(np.ones(3, np.float32), name=f"blk.{NASTY}.w")
    y = gc.sum(gc.tanh(x * w))
    texts = _texts(_svg(render_dot(y)), "text")
    want = _shown(f"blk.{NASTY}").split("\n")  # the cluster's label, line by line
    start = texts.index(want[0])
    assert texts[start:start + len(want)] == want
    svg = _svg(gc.to_dot(y, name=NASTY))
    assert _texts(svg, "title")[0] == _shown(NASTY).replace("\n", "\\n")  # the graph's name


def test_gc_render_writes_svg_for_hostile_names(tmp_path):
    pytest.importorskip("graphviz")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    x = gc.placeholder((3,), name=XSS[0])
    w = gc.parameter(np.ones(3, np.float32), name=f"{XSS[1]}.{NASTY}.w")
    y = gc.sum(x * w)
    out = gc.render(y, tmp_path / "g.svg")
    svg = Path(out).read_text(encoding="utf-8")
    ET.fromstring(svg.encode())
    assert not re.search(r"<(img|script)\b", svg)
    view = y._repr_html_()  # the notebook view embeds the same SVG
    assert view is not None and not re.search(r"<(img|script)\b", view)
    ET.fromstring(y._repr_svg_().encode())


# ---- LaTeX ---------------------------------------------------------------------------------

def test_latex_shows_names_as_plain_symbols():
    x = gc.placeholder((3,), name=r"x}\input{/etc/passwd}$%#&~^")
    w = gc.parameter(np.ones(3, np.float32), name=r"W\def\a{}")
    tex = gc.to_latex(gc.sum(gc.tanh(x * w)))
    assert not re.search(r"\\(input|def|include|write|immediate|catcode)\b", tex)
    assert not set("$%#&~") & set(tex)
    depth = 0
    for ch in tex.replace(r"\{", "").replace(r"\}", ""):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0


# ---- the command line ----------------------------------------------------------------------

def test_the_command_line_sends_no_control_characters(tmp_path, capsys, monkeypatch):
    target = tmp_path / "model.py"
    target.write_text(
        "import numpy as np\nimport graphc as gc\n"
        "x = gc.placeholder((3,), name='x\\x1b]0;owned\\x07')\n"
        "w = gc.parameter(np.ones(3, np.float32), name='m\\x1b[2J.w')\n"
        "y = gc.sum(x * w)\n"
        "def broken():\n    raise ValueError('bad \\x1b[31mred\\r\\u202eevil')\n")
    for argv in (["show", f"{target}:y"], ["show", f"{target}:y", "--format", "dot"],
                 ["show", f"{target}:broken"]):
        main(argv)
        out, err = capsys.readouterr()
        assert out or err
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u202e]", out + err), (out, err)
    assert "bad \\x1b[31mred \\u202eevil" in err  # the message, its controls escaped
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "c\x1b[2J"))
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "c\\x1b[2J" in out
