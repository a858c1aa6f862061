"""A demo folder's stage records: a stage is reused only with the inputs it was made from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audistill.tools.demo.stages import Stages, plain


def test_a_stage_is_reused_only_with_its_own_key(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    key = {"minutes": 14.0, "seed": 0}
    assert st.reuse("corpus", key, "the corpus") == (False, None) and not said  # never made
    assert st.done("corpus", key, {"clips": np.int64(515)}) == {"clips": 515}
    assert st.reuse("corpus", dict(key), "the corpus") == (True, {"clips": 515})
    assert said[-1] == "  the corpus: reused (made with the same inputs)"
    assert st.reused == ["corpus"]
    assert st.reuse("corpus", key | {"minutes": 60.0}, "the corpus") == (False, None)
    assert said[-1] == "  the corpus: made from other inputs (minutes changed): making it again"
    st.forget("corpus")
    assert st.reuse("corpus", key, "the corpus") == (False, None)


def test_a_key_names_what_changed_however_deep(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    key = {"corpus": {"minutes": 14.0}, "teachers": "a", "extra": (1, 2)}
    st.done("bank", key)
    assert st.reuse("bank", {"corpus": {"minutes": 14.0}, "teachers": "a", "extra": [1, 2]}, "b")[0]
    changed = {"corpus": {"minutes": 60.0}, "teachers": "b", "extra": (1, 2), "new": 1}
    assert not st.reuse("bank", changed, "the bank")[0]
    assert "(corpus.minutes, new, teachers changed)" in said[-1]


def test_an_unreadable_record_is_not_a_finished_stage(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    st.done("run-a", {"steps": 3}, {"loss": 1.0})
    (tmp_path / "stages" / "run-a.json").write_text('{"key": {"ste')  # cut short
    assert st.reuse("run-a", {"steps": 3}, "run a") == (False, None)
    assert "unreadable" in said[-1]
    assert not list((tmp_path / "stages").glob("*.tmp-*"))  # records are written whole


def test_plain_is_what_json_reads_back():
    value = {"p": Path("/a/b"), "t": (1, 2), "f": np.float32(0.5), "a": np.arange(3)}
    assert plain(value) == {"p": "/a/b", "t": [1, 2], "f": 0.5, "a": [0, 1, 2]}
    assert json.loads(json.dumps(plain(value))) == plain(value)
