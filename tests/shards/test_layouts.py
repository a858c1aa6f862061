"""Layouts are found by name in a registry: the bank's modules know none of them, and a new one
is one module that registers itself."""

from __future__ import annotations

import ast
import pathlib

import pytest

from audistill.shards.bank import Bank
from audistill.shards.errors import CatalogError
from audistill.shards.layout_wds import WdsLayout
from audistill.shards.layouts import get_layout, layout_names, register_layout
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .helpers import make_bank
from .test_bank import assert_matches

SHARDS = pathlib.Path(__file__).resolve().parents[2] / "shards"


def test_the_built_in_layouts_are_registered_and_an_unknown_one_is_named():
    assert {"zarr", "webdataset"} <= set(layout_names())
    assert get_layout("zarr").name == "zarr"
    with pytest.raises(CatalogError, match="unknown layout 'parquet'.*zarr"):
        get_layout("parquet")


@pytest.mark.parametrize(
    "module", ["bank.py", "catalog.py", "verify.py", "info.py", "recovery.py", "reader.py"]
)
def test_the_bank_modules_reach_layouts_only_through_the_registry(module):
    tree = ast.parse((SHARDS / module).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not imported & {"layout_zarr", "layout_wds"}, imported
    compared = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and any(
            isinstance(c, ast.Constant) and c.value in ("zarr", "webdataset")
            for c in [node.left, *node.comparators]
        )
    ]
    assert not compared, compared


class _Mirror(WdsLayout):
    """A third layout, as a new module would add one (here: the WebDataset files under another
    name)."""

    name = "mirror"


def test_a_registered_layout_serves_every_bank_operation(tmp_path):
    register_layout(_Mirror())
    root = tmp_path / "b"
    bank, truth = make_bank(root, "mirror", shards=2, per_shard=3)
    assert Bank.open(str(root)).layout == "mirror"
    assert assert_matches(BankReader(str(root)), truth) == 6
    report = verify_bank(str(root))
    assert report.ok and report.shards_checked == 2, report.broken
    (root / "bank.json").unlink()
    assert sorted(Bank.rebuild(str(root)).catalog.shards) == sorted(bank.catalog.shards)
