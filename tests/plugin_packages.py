"""A package installed for real, as pip lays one out: a module and a ``*.dist-info`` whose
``entry_points.txt`` registers it, in a folder put on ``sys.path``. For the entry point groups
(``stanchion.providers``, ``stanchion.tools``) that find plugins in installed packages' metadata."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def installed_package(
    site: Path, monkeypatch: pytest.MonkeyPatch, *, name: str, module: str, source: str, entry_points: str
) -> Iterator[Path]:
    """Install ``module`` (its ``source``) as the distribution ``name`` with ``entry_points`` (the
    text of ``entry_points.txt``) under ``site``; importable until the block ends."""
    site.mkdir()
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    dist = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    try:
        yield site
    finally:
        sys.modules.pop(module, None)
