"""A re-run after the corpus changed stores every segment once, whatever the new shard plan."""

import json
from collections import Counter

import numpy as np

from audistill.extract.run import ExtractConfig, build_plan, extract, plan_to_file
from audistill.extract.spec import TeacherSpec
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .conftest import make_corpus, write_wav


def _cfg(**kw):
    return ExtractConfig(
        **{
            **dict(
                max_seconds=1.0,
                shard_seconds=3.0,
                domain="speech",
                loader_workers=0,
                batch_seconds=8.0,
            ),
            **kw,
        }
    )


def _spec(tiny_dir, kind="wavlm"):
    return TeacherSpec(name=kind, source=str(tiny_dir(kind)), layers=[1], codec="float16")


def _ids(root):
    return Counter(sd.segment.id for sd in BankReader(root))


def _planned(corpus, specs):
    plan, _ = build_plan([str(corpus)], specs, _cfg())
    return {s.id for sh in plan for s in sh.segments}


def test_a_file_added_to_a_folder_is_extracted_and_nothing_is_stored_twice(tiny_dir, tmp_path):
    corpus = make_corpus(tmp_path / "c")
    specs = [_spec(tiny_dir)]
    root = str(tmp_path / "bank")
    first = extract([str(corpus)], specs, root, _cfg())
    assert first.failed == 0 and first.shards_run >= 3
    write_wav(
        corpus / "music" / "a-new.wav", 1.7, seed=9
    )  # sorts first: every later shard is re-planned
    plan_file = str(tmp_path / "plan.bin")  # from a plan file: its index names the shards
    plan_to_file([str(corpus)], specs, _cfg(), plan_file)
    again = extract([], specs, root, _cfg(plan_file=plan_file))
    ids = _ids(root)
    assert max(ids.values()) == 1 and set(ids) == _planned(corpus, specs)
    assert (
        again.segments_written == 2 and again.failed == 0
    )  # the new file's two pieces, nothing else
    assert verify_bank(root).ok
    third = extract([str(corpus)], specs, root, _cfg())
    assert third.shards_run == 0 and _ids(root) == ids


def test_a_file_unreadable_in_the_first_run_is_added_once_when_restored(tiny_dir, tmp_path):
    corpus = tmp_path / "c"
    for i in range(6):
        write_wav(corpus / f"f{i}.wav", 0.9, seed=i)
    good = (corpus / "f1.wav").read_bytes()
    (corpus / "f1.wav").write_bytes(b"RIFF\x00\x00 not audio")
    specs = [_spec(tiny_dir)]
    root = str(tmp_path / "bank")
    first = extract([str(corpus)], specs, root, _cfg())
    assert first.segments_written == 5 and first.failed == 1
    (corpus / "f1.wav").write_bytes(good)
    catalog = json.loads((tmp_path / "bank" / "bank.json").read_text())
    catalog[
        "shards"
    ] = {}  # as after a run killed before it saved the catalog: the commit records say it all
    (tmp_path / "bank" / "bank.json").write_text(json.dumps(catalog))
    extract([str(corpus)], specs, root, _cfg())
    ids = _ids(root)
    assert sum(ids.values()) == 6 and set(ids) == _planned(corpus, specs)
    assert verify_bank(root).ok


def test_a_teacher_added_after_the_corpus_changed_covers_every_stored_segment(tiny_dir, tmp_path):
    corpus = make_corpus(tmp_path / "c")
    wavlm, hubert = _spec(tiny_dir), _spec(tiny_dir, "hubert")
    root = str(tmp_path / "bank")
    extract([str(corpus)], [wavlm], root, _cfg())
    write_wav(corpus / "music" / "a-new.wav", 1.7, seed=9)
    s = extract([str(corpus)], [wavlm, hubert], root, _cfg())
    assert s.failed == 0
    ref = str(tmp_path / "ref")
    extract([str(corpus)], [wavlm, hubert], ref, _cfg())
    got = {sd.segment.id: sd.features for sd in BankReader(root)}
    want = {sd.segment.id: sd.features for sd in BankReader(ref)}
    assert sorted(got) == sorted(want)
    for i, f in want.items():
        np.testing.assert_array_equal(got[i]["hubert"][1], f["hubert"][1])
    assert verify_bank(root).ok


def test_slices_of_a_re_run_after_the_corpus_changed_store_every_segment_once(tiny_dir, tmp_path):
    """Every slice reconciles the same plan with the bank, so the slices stay disjoint."""
    from audistill.extract.run import merge_errors
    from audistill.shards.bank import Bank

    corpus = make_corpus(tmp_path / "c")
    specs = [_spec(tiny_dir)]
    root = str(tmp_path / "bank")
    extract([str(corpus)], specs, root, _cfg())
    write_wav(corpus / "music" / "a-new.wav", 1.7, seed=9)
    write_wav(corpus / "speech" / "utt02b.wav", 2.2, seed=8)  # a second change, further on
    runs = [
        extract([str(corpus)], specs, root, _cfg(num_workers=2, worker_index=i)) for i in range(2)
    ]
    bank = Bank.open(root)
    bank.sync_catalog()
    merge_errors(bank)
    ids = _ids(root)
    assert max(ids.values()) == 1 and set(ids) == _planned(corpus, specs)
    assert sum(r.segments_written for r in runs) == 2 + 3 and verify_bank(root).ok
