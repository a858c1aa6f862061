"""The layering that docs/ARCHITECTURE.md promises, checked on every import statement of the
library.

Each top-level folder is one ``audistill`` package; a package may import only the packages below it:
``shards`` none, ``extract`` ``shards``, ``train`` ``shards``, ``tools`` any. The one exception is
written here with its reason. No library module imports the tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("shards", "extract", "train", "tools")

# package -> the audistill packages it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "shards": {"shards"},
    "extract": {"shards", "extract"},
    "train": {"shards", "train"},
    "tools": set(PACKAGES),
}
# (file, package) -> why. The online-teacher baseline is a comparison mode of training: it loads
# teachers through extract's registry, on request only (the bank's point is never to do this).
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("train/online.py", "extract"): "the optional online-teacher baseline loads teachers",
}


def _module_parts(root: Path, path: Path) -> list[str]:
    """``extract/run.py`` -> ['audistill', 'extract', 'run']; ``tools/cli/__init__.py`` -> [...,
    'cli']."""
    parts = ["audistill", *path.relative_to(root).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _targets(node: ast.AST, here: list[str], is_package: bool) -> list[str]:
    """The dotted names one import statement (or ``importlib.import_module("...")`` call)
    reaches."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            base = node.module or ""
        else:
            package = here if is_package else here[:-1]
            up = package[: len(package) - (node.level - 1)]
            if len(up) < 1 or node.level - 1 > len(package):
                return ["<beyond the top>"]
            base = ".".join([*up, *([node.module] if node.module else [])])
        return [f"{base}.{a.name}" for a in node.names]
    if (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def imports_of(root: Path) -> dict[str, set[str]]:
    """Every library file under ``root`` -> the top-level names it imports: an audistill package
    ('shards', 'extract', ...), 'tests', or '<beyond the top>' for a relative import out of the
    tree."""
    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            here = _module_parts(root, path)
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                for target in _targets(node, here, path.name == "__init__.py"):
                    parts = target.split(".")
                    if parts[0] == "audistill" and len(parts) > 1:
                        names.add(parts[1])
                    elif parts[0] in ("tests", "<beyond the top>"):
                        names.add(parts[0])
            found[path.relative_to(root).as_posix()] = names
    return found


def private_imports(root: Path) -> list[str]:
    """``from module import _name`` across modules of the library (dunders such as ``__version__``
    aside)."""
    found = []
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ImportFrom):
                    found += [
                        f"{path.relative_to(root).as_posix()}: {a.name}"
                        for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")
                    ]
    return found


def violations(root: Path) -> list[str]:
    bad = []
    for file, names in imports_of(root).items():
        pkg = file.split("/")[0]
        for name in sorted(names - ALLOWED[pkg]):
            if (file, name) not in EXCEPTIONS:
                bad.append(
                    f"{file} imports {name} ({pkg} may import: {', '.join(sorted(ALLOWED[pkg]))})"
                )
    return bad


def test_the_library_keeps_its_layers():
    assert violations(REPO) == []


# Still imported, from a file outside this change; to be made public where it is defined.
PRIVATE_IMPORTS = {
    "tools/bench/plan.py: _unpack"
}  # extract/plan.py's cache of unpacked shard plans


def test_no_private_name_crosses_a_module():
    assert set(private_imports(REPO)) <= PRIVATE_IMPORTS


def test_a_private_import_is_found(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "tools" / "a.py").write_text(
        "from . import __version__\nfrom .b import public, _private\n"
    )
    (tmp_path / "shards" / "a.py").write_text(
        "def f():\n    from audistill.shards.fs import _strip_proto\n"
    )
    assert private_imports(tmp_path) == ["shards/a.py: _strip_proto", "tools/a.py: _private"]


def test_the_check_reads_the_whole_tree():
    found = imports_of(REPO)
    assert len(found) > 50 and all(f.split("/")[0] in PACKAGES for f in found)
    assert "shards" in found["train/loop.py"] and "shards" in found["extract/pipeline.py"]
    assert {"shards", "extract", "train", "tools"} <= set().union(
        *(found[f] for f in found if f.startswith("tools/"))
    )
    for file, name in EXCEPTIONS:  # an exception the code no longer needs is removed, not kept
        assert name in found[file], f"{file} no longer imports {name}: drop its exception"


@pytest.mark.parametrize(
    ("file", "text", "reached"),
    [
        ("shards/x.py", "from audistill.train import loop\n", "train"),
        ("shards/x.py", "import audistill.extract.run as r\n", "extract"),
        ("shards/x.py", "from ..tools.cli import app\n", "tools"),
        ("shards/x.py", "from audistill import train\n", "train"),
        ("extract/x.py", "def f():\n    from audistill.tools.demo import run\n", "tools"),
        ("extract/sub/x.py", "from ...train.loop import train\n", "train"),
        (
            "train/x.py",
            "import importlib\nimportlib.import_module('audistill.tools.cli')\n",
            "tools",
        ),
        ("train/x.py", "from tests.shards.helpers import make_bank\n", "tests"),
        ("extract/x.py", "from .... import y\n", "<beyond the top>"),
    ],
)
def test_a_crossing_import_is_found(tmp_path, file, text, reached):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text(text)
    bad = violations(tmp_path)
    assert len(bad) == 1 and bad[0].startswith(f"{file} imports {reached} "), bad


def test_allowed_imports_pass(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg / "sub").mkdir(parents=True)
    (tmp_path / "shards" / "a.py").write_text("from .b import c\nfrom . import d\nimport numpy\n")
    (tmp_path / "extract" / "sub" / "a.py").write_text(
        "from ..teachers import x\nfrom audistill.shards import bank\n"
    )
    (tmp_path / "train" / "a.py").write_text("from audistill.shards.reader import BankReader\n")
    (tmp_path / "tools" / "sub" / "a.py").write_text(
        "from ...train import loop\nfrom ..cli.options import JsonOpt\n"
    )
    assert violations(tmp_path) == []


def test_the_sample_rate_has_one_name():
    """16 kHz is ``shards.segments.SAMPLE_RATE`` everywhere in the library: a literal beside it is a
    second source of truth (that module alone defines it)."""
    literal = re.compile(r"(?<![\w.])16_?000(?![\w.])")
    found = []
    for folder in ("shards", "extract", "train", "tools"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if (
                    literal.search(code)
                    and "SAMPLE_RATE =" not in code
                    and not code.lstrip().startswith(('"', "'"))
                ):
                    found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
