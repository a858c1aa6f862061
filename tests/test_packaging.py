"""Every sub-package of the library is listed in pyproject.toml, so a regular (non-editable) install
holds every module: setuptools installs only the packages it is told, and an editable install or a
PYTHONPATH checkout would hide a forgotten one."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("shards", "extract", "train", "tools")


def package_folders(root: Path) -> dict[str, str]:
    """Dotted package name -> folder, for every folder of the library holding an ``__init__.py``."""
    found = {}
    for top in FOLDERS:
        for init in sorted((root / top).rglob("__init__.py")):
            folder = init.parent.relative_to(root).as_posix()
            found["audistill." + folder.replace("/", ".")] = folder
    return found


def test_pyproject_lists_and_maps_every_package():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = package_folders(REPO)
    assert {"audistill.tools.cli", "audistill.tools.bench", "audistill.shards"} <= set(found)
    assert sorted(setup["packages"]) == sorted(found)
    assert setup["package-dir"] == found
