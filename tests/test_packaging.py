"""Packaging: every package directory is listed in setup.cfg (a missing one only breaks
non-editable installs, so a test has to say it)."""
from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    mapping = dict(line.split(" = ") for line in cfg["options"]["package_dir"].strip().splitlines())
    found = set()
    for package, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((package,) + rel.parts) if rel.parts else package)
    # graphc's own folder also holds graphc.frontends/backends only through the mapping
    assert found - listed == set(), f"packages missing from setup.cfg: {sorted(found - listed)}"
