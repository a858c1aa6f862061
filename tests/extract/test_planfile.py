"""Plan files: written once by `audistill plan`, read by each slice (its own shards only), refused
when damaged or made with other settings, and giving the same bank as planning from the corpus."""

import json

import pytest

from audistill.extract.errors import ExtractError
from audistill.extract.planfile import PlanFile, PlanFileError
from audistill.extract.run import ExtractConfig, build_plan, extract, plan_to_file
from audistill.extract.spec import TeacherSpec
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .conftest import make_corpus, run_cli


def _cfg(**kw):
    base = dict(
        max_seconds=1.0,
        shard_seconds=3.0,
        domain_map={"speech": "speech", "music": "music"},
        loader_workers=0,
        batch_seconds=8.0,
    )
    return ExtractConfig(**{**base, **kw})


def _spec(tiny_dir=None):
    return TeacherSpec(
        name="wavlm",
        source=str(tiny_dir("wavlm")) if tiny_dir else "/unused",
        layers=[1],
        codec="float16",
    )


@pytest.fixture
def planned(tmp_path):
    root = make_corpus(tmp_path / "corpus", 8, 3)
    (root / "speech" / "broken.wav").write_bytes(b"RIFF nope")
    out = str(tmp_path / "plans" / "corpus.plan")
    summary = plan_to_file([str(root)], [_spec()], _cfg(), out)
    return root, out, summary


def test_a_plan_file_holds_the_plan_and_a_slice_reads_only_its_shards(planned, monkeypatch):
    root, out, summary = planned
    want, want_errors = build_plan([str(root)], [_spec()], _cfg())
    pf = PlanFile(out)
    assert len(pf) == len(want) == summary["shards"] > 4 and summary["unusable_inputs"] == 1
    assert list(pf) == list(want) and pf[-1] == want[-1] and pf[1:3] == want[1:3]
    assert [e["reason"] for e in pf.errors] == [e["reason"] for e in want_errors]
    assert pf.params["inputs"] == [str(root)] and pf.params["segment_seconds"] == 1.0
    read = []
    real = PlanFile._read
    monkeypatch.setattr(
        PlanFile, "_read", lambda self, which: read.extend(which) or real(self, which)
    )
    plan, errors = build_plan([], [_spec()], _cfg(plan_file=out))
    mine = plan[1::3]
    assert [sh.name for sh in mine] == [sh.name for sh in want[1::3]] and read == list(
        range(len(want))
    )[1::3]


def test_extracting_from_a_plan_file_in_slices_equals_extracting_from_the_corpus(
    planned, tiny_dir, tmp_path
):
    root, out, _ = planned
    spec = _spec(tiny_dir)
    direct = extract([str(root)], [spec], str(tmp_path / "direct"), _cfg())
    for i in range(2):
        extract(
            [], [spec], str(tmp_path / "sliced"), _cfg(plan_file=out, num_workers=2, worker_index=i)
        )
    from audistill.extract.run import merge_errors
    from audistill.shards.bank import Bank

    bank = Bank.open(str(tmp_path / "sliced"))
    bank.sync_catalog()
    merge_errors(bank)

    def content(root):
        return {
            sd.segment.id: (sd.shard, sd.audio.tobytes(), sd.features["wavlm"][1].tobytes())
            for sd in BankReader(root)
        }

    assert (
        content(str(tmp_path / "sliced")) == content(str(tmp_path / "direct"))
        and direct.segments_written > 0
    )
    errs = [
        json.loads(line) for line in (tmp_path / "sliced" / "errors.jsonl").read_text().splitlines()
    ]
    assert [e["file"].rsplit("/", 1)[-1] for e in errs] == [
        "broken.wav"
    ]  # recorded once, by slice 0
    assert verify_bank(str(tmp_path / "sliced")).ok


def test_a_plan_made_with_other_settings_or_beside_inputs_is_refused(planned):
    root, out, _ = planned
    with pytest.raises(
        PlanFileError, match=r"other settings \(shard_seconds: the plan has 3.0, this run 7.0\)"
    ):
        build_plan([], [_spec()], _cfg(plan_file=out, shard_seconds=7.0))
    short = TeacherSpec(name="w", source="/unused", max_seconds=0.5)
    with pytest.raises(PlanFileError, match="segment_seconds"):
        build_plan([], [short], _cfg(plan_file=out))
    with pytest.raises(ExtractError, match="not both"):
        build_plan([str(root)], [_spec()], _cfg(plan_file=out))
    with pytest.raises(ExtractError, match="no corpus inputs"):
        build_plan([], [_spec()], _cfg())


def test_damaged_plan_files_are_errors_naming_the_file(planned, tmp_path):
    _, out, _ = planned
    data = open(out, "rb").read()
    bad = tmp_path / "bad.plan"
    bad.write_bytes(data[:-10])
    with pytest.raises(PlanFileError, match="bad.plan: truncated"):
        PlanFile(str(bad))
    bad.write_bytes(data[:200])
    with pytest.raises(PlanFileError, match="truncated"):
        PlanFile(str(bad))
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # inside the last shard's blob
    bad.write_bytes(bytes(flipped))
    pf = PlanFile(str(bad))
    pf[0]  # other shards still read
    with pytest.raises(PlanFileError, match=r"shard .* is damaged|does not hold the segments"):
        pf[-1]
    bad.write_bytes(b"not a plan at all")
    with pytest.raises(PlanFileError, match="not an audistill plan file"):
        PlanFile(str(bad))
    with pytest.raises(PlanFileError, match="does not exist"):
        PlanFile(str(tmp_path / "nope.plan"))


def test_cli_plan_then_extract_from_it(tmp_path, tiny_dir, capsys, monkeypatch):

    root = make_corpus(tmp_path / "corpus", 3, 1)
    spec = tmp_path / "t.toml"
    spec.write_text(
        f'[[teacher]]\nname = "wavlm"\nsource = "{tiny_dir("wavlm")}"\nlayers = [1]\ncodec = '
        '"float16"\n'
    )

    def run(*args):
        return run_cli(monkeypatch, capsys, *args)

    plan = str(tmp_path / "c.plan")
    code, out, err = run(
        "plan", str(root), "--teachers", str(spec), "-o", plan, "--max-seconds", "2", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["segments"] == 4
    code, out, err = run(
        "extract",
        "--plan",
        plan,
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--max-seconds",
        "2",
        "--loader-workers",
        "0",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["segments_written"] == 4
    code, _, err = run(
        "extract",
        str(root),
        "--plan",
        plan,
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b2"),
    )
    assert code == 2 and "not both" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(
        "extract", "--plan", plan, "--teachers", str(spec), "--bank", str(tmp_path / "b2")
    )
    assert code == 2 and "other settings" in err and not (tmp_path / "b2").exists()
