"""Two `audistill extract` runs on one bank at the same time, as real processes: nothing lost
(no shard committed over files the other run's start-up clean deleted), nothing doubled, every
teacher of both runs in bank.json and in every shard."""

import os
import subprocess
import sys
import time

import pytest

from audistill.shards.bank import Bank
from audistill.shards.reader import BankReader
from audistill.shards.verify import verify_bank

from .conftest import make_corpus, run_cli

CLI = [sys.executable, "-c", "from audistill.tools.cli import main; main()", "extract"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _spec(tmp_path, tiny_dir, kind: str):
    p = tmp_path / f"{kind}.toml"
    p.write_text(
        f'[[teacher]]\nname = "{kind}"\nsource = "{tiny_dir(kind)}"\nlayers = "sparse:2"\ncodec = '
        '"float16"\n'
    )
    return p


def _args(corpus, bank, spec) -> list[str]:
    return [
        str(corpus),
        "--bank",
        str(bank),
        "--teachers",
        str(spec),
        "--max-seconds",
        "1.5",
        "--shard-hours",
        str(3.0 / 3600),
        "--loader-workers",
        "0",
        "--writers",
        "2",
        "--writer-kind",
        "thread",
    ]


def _content(root) -> dict:
    out = {}
    for sd in BankReader(str(root)):
        assert sd.segment.id not in out, f"segment {sd.segment.id} stored twice"
        out[sd.segment.id] = (
            sd.audio.tobytes(),
            {t: {k: v.tobytes() for k, v in f.items()} for t, f in sd.features.items()},
        )
    return out


def _together(*argvs) -> list[subprocess.CompletedProcess]:
    """Start every run at once (each deletes leftovers as it starts, then stages shards)."""
    procs = [
        subprocess.Popen(
            CLI + a, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for a in argvs
    ]
    out = []
    deadline = time.time() + 400
    for p in procs:
        o, e = p.communicate(timeout=max(1, deadline - time.time()))
        out.append(subprocess.CompletedProcess(p.args, p.returncode, o, e))
    return out


@pytest.mark.slow  # five extraction runs, three at once (~2 min on 2 shared cores)
def test_two_runs_with_two_teachers_at_once_keep_everything(
    tmp_path, tiny_dir, capsys, monkeypatch
):
    corpus = make_corpus(tmp_path / "corpus", n_speech=8, n_music=2)
    wavlm, hubert = _spec(tmp_path, tiny_dir, "wavlm"), _spec(tmp_path, tiny_dir, "hubert")
    for kind, spec in (("wavlm", wavlm), ("hubert", hubert)):
        code, _, err = run_cli(
            monkeypatch, capsys, "extract", *_args(corpus, tmp_path / f"ref-{kind}", spec)
        )
        assert code == 0, err
    refs = {k: _content(tmp_path / f"ref-{k}") for k in ("wavlm", "hubert")}

    bank = tmp_path / "both"
    runs = _together(
        _args(corpus, bank, wavlm), _args(corpus, bank, hubert), _args(corpus, bank, wavlm)
    )
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    report = verify_bank(str(bank))
    assert report.ok, report.to_json()
    b = Bank.open(str(bank))
    assert sorted(b.catalog.teachers) == [
        "hubert",
        "wavlm",
    ]  # no run's catalog save dropped the other's teacher
    assert sorted(b.catalog.shards) == sorted(Bank.open(str(tmp_path / "ref-wavlm")).catalog.shards)
    got = _content(bank)
    assert sorted(got) == sorted(refs["wavlm"])
    for seg, (audio, feats) in got.items():
        assert audio == refs["wavlm"][seg][0], (
            seg
        )  # not zeros: nothing committed over deleted files
        for kind in ("wavlm", "hubert"):
            assert feats.get(kind) == refs[kind][seg][1].get(kind), (seg, kind)
    assert not [p for p in (bank / "shards").iterdir() if ".tmp-" in p.name]
    assert not list((bank / "leases").glob("*.json"))  # every run gave its lease back


def test_a_codec_state_another_run_fitted_meanwhile_is_used_not_fitted_over(tmp_path, tiny_dir):
    """Run A registered its teacher before run B (other audio) fitted and saved that teacher's
    int8-delta states: A, fitting next, takes the codecs claim, sees B's states and keeps them -
    fitting its own would write other states over the files B's shards were encoded with."""
    from audistill.extract.pipeline import teacher_codecs
    from audistill.extract.run import ExtractConfig, extract, fit_codecs, open_run
    from audistill.extract.spec import TeacherSpec

    from .conftest import write_wav

    spec = TeacherSpec(
        name="wavlm", source=str(tiny_dir("wavlm")), layers=[1, 3], codec="int8-delta"
    )
    cfg = ExtractConfig(max_seconds=1.5, loader_workers=0)
    corpora = []
    for k in range(2):
        for i in range(3):
            write_wav(tmp_path / f"corpus{k}" / "speech" / f"u{i}.wav", 1.2, seed=10 * k + i)
        corpora.append(str(tmp_path / f"corpus{k}"))
    bank_root = str(tmp_path / "bank")
    plan_a, _, teachers_a, bank_a = open_run(
        [corpora[0]], [spec], bank_root, cfg
    )  # A: registered, not fitted
    extract([corpora[1]], [spec], bank_root, cfg)  # B: fits on its own audio, writes its shards
    state_file = tmp_path / "bank" / "codec_state" / "wavlm" / "L01.npz"
    fitted_by_b = state_file.read_bytes()
    fit_codecs(bank_a, teachers_a, teacher_codecs(bank_a, teachers_a), plan_a[0], cfg)
    assert state_file.read_bytes() == fitted_by_b
    assert bank_a.load_codec_state("wavlm", 1) is not None
    assert verify_bank(bank_root).ok
