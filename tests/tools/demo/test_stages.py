"""A demo folder's stage records: a stage is reused only with the inputs it was made from, only
while its output is there, and a remade stage invalidates what was made from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from audistill.tools.demo.stages import Stages, code_of, plain


def test_a_stage_is_reused_only_with_its_own_key(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    key = {"minutes": 14.0, "seed": 0}
    assert st.reuse("corpus", key, "the corpus") == (False, None) and not said  # never made
    assert st.done("corpus", key, {"clips": np.int64(515)}) == {"clips": 515}
    again = Stages(tmp_path, said.append)  # the next run
    assert again.reuse("corpus", dict(key), "the corpus") == (True, {"clips": 515})
    assert said[-1] == "  the corpus: reused (made with the same inputs)"
    assert again.reused == ["corpus"] and again.made("corpus") == st.made("corpus")
    assert again.reuse("corpus", key | {"minutes": 60.0}, "the corpus") == (False, None)
    assert said[-1] == "  the corpus: made from other inputs (minutes changed): making it again"
    again.forget("corpus")
    assert again.reuse("corpus", key, "the corpus") == (False, None)


def test_a_remade_stage_invalidates_what_was_made_from_it(tmp_path):
    """Downstream keys hold the made id of what they were made from: an upstream stage made again
    with the very same options (an interrupted extraction redone) still makes them stale."""
    st = Stages(tmp_path, lambda _: None)
    st.done("bank", {"teachers": "a"})
    st.done("student", {"bank": st.made("bank"), "steps": 3})
    nxt = Stages(tmp_path, lambda _: None)
    assert nxt.reuse("bank", {"teachers": "a"}, "bank")[0]
    assert nxt.reuse("student", {"bank": nxt.made("bank"), "steps": 3}, "student")[0]
    nxt.forget("bank")
    nxt.done("bank", {"teachers": "a"})  # the same options, made again
    said: list[str] = []
    last = Stages(tmp_path, said.append)
    assert last.reuse("bank", {"teachers": "a"}, "bank")[0]
    assert not last.reuse("student", {"bank": last.made("bank"), "steps": 3}, "the student")[0]
    assert said[-1] == "  the student: made from other inputs (bank changed): making it again"


def test_a_key_names_what_changed_however_deep(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    key = {"corpus": {"minutes": 14.0}, "teachers": "a", "extra": (1, 2)}
    st.done("bank", key)
    assert st.reuse("bank", {"corpus": {"minutes": 14.0}, "teachers": "a", "extra": [1, 2]}, "b")[0]
    changed = {"corpus": {"minutes": 60.0}, "teachers": "b", "extra": (1, 2), "new": 1}
    assert not st.reuse("bank", changed, "the bank")[0]
    assert "(corpus.minutes, new, teachers changed)" in said[-1]


def test_a_stage_whose_output_is_gone_is_made_again(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    out = tmp_path / "bank-int8"
    out.mkdir()
    st.done("bank-int8", {"codec": "int8"})
    st.done("run-a", {"steps": 3}, {"run_dir": str(tmp_path / "runs" / "a")})
    out.rmdir()
    assert not st.reuse("bank-int8", {"codec": "int8"}, "the int8 bank", output=out)[0]
    assert said[-1] == "  the int8 bank: recorded as made, but its output is gone: making it again"
    has_ckpt = lambda run: any(Path(run["run_dir"]).glob("ckpt-*"))  # noqa: E731
    assert not st.reuse("run-a", {"steps": 3}, "run a", valid=has_ckpt)[0]
    (tmp_path / "runs" / "a" / "ckpt-3").mkdir(parents=True)
    assert st.reuse("run-a", {"steps": 3}, "run a", valid=has_ckpt)[0]
    assert st.reused == ["run-a"]  # what was remade is not counted as reused


def test_output_without_a_record_is_made_again_and_says_so(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    (tmp_path / "corpus").mkdir()  # a folder from before stage records, or an interrupted stage
    assert not st.reuse("corpus", {"minutes": 1}, "the corpus", output=tmp_path / "corpus")[0]
    assert said == ["  the corpus: no record of what made corpus: making it again"]


def test_an_unreadable_record_is_not_a_finished_stage(tmp_path):
    said: list[str] = []
    st = Stages(tmp_path, said.append)
    st.done("run-a", {"steps": 3}, {"loss": 1.0})
    rec = tmp_path / "stages" / "run-a.json"
    for text in ('{"key": {"ste', "[1, 2]", '{"key": {"steps": 3}}'):  # cut short, no record
        rec.write_text(text)
        assert st.reuse("run-a", {"steps": 3}, "run a") == (False, None)
        assert "unreadable" in said[-1]
    assert not list((tmp_path / "stages").glob("*.tmp-*"))  # records are written whole


def test_fresh_makes_every_stage_again(tmp_path):
    Stages(tmp_path, lambda _: None).done("corpus", {"minutes": 1})
    said: list[str] = []
    assert not Stages(tmp_path, said.append, fresh=True).reuse("corpus", {"minutes": 1}, "c")[0]
    assert not said


def test_code_of_fingerprints_the_source_and_the_libraries():
    probe = code_of("tools.probe")
    assert probe == code_of("tools.probe") and probe["libraries"]["torch"]
    assert probe["code"] != code_of("tools.probe", "train")["code"]
    assert code_of("shards")["code"] != code_of("shards", skip=("lease.py",))["code"]


def test_plain_is_what_json_reads_back():
    value = {"p": Path("/a/b"), "t": (1, 2), "f": np.float32(0.5), "a": np.arange(3)}
    assert plain(value) == {"p": "/a/b", "t": [1, 2], "f": 0.5, "a": [0, 1, 2]}
    assert json.loads(json.dumps(plain(value))) == plain(value)
