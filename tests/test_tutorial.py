"""docs/tutorial.md runs as written: its Python blocks in order, in a fresh process."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


@pytest.mark.slow
def test_the_tutorial_runs(tmp_path):
    code = "\n".join(re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(), re.S))
    script = tmp_path / "tutorial.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    accuracy = float(re.search(r"held-out accuracy: ([\d.]+)%", r.stdout).group(1))
    assert accuracy > 85.0
    assert r"\frac{\partial L}{\partial W_{1}} &= x^{\top} \delta_{3}" in r.stdout
