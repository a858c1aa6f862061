"""Plans that would silently cover nothing are refused or warned about; the dry run is strict
JSON."""

import json
import logging

import pytest

from audistill.extract.run import ExtractConfig, extract

from .conftest import make_corpus, run_cli


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _spec_file(tmp_path, tiny_dir, extra: str = "", codec: str = "float16"):
    p = tmp_path / "teachers.toml"
    p.write_text(
        f'[[teacher]]\nname = "wavlm"\nsource = "{tiny_dir("wavlm")}"\nlayers = [1]\ncodec = '
        f'"{codec}"\n' + extra
    )
    return p


def test_a_dry_run_with_a_fitted_codec_prints_strict_json(tmp_path, tiny_dir, capsys, monkeypatch):
    corpus = make_corpus(tmp_path / "c", 2, 1)
    spec = _spec_file(
        tmp_path, tiny_dir, codec="int8-delta"
    )  # fitted on the corpus: size unknown before
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "extract",
        str(corpus),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--dry-run",
        "--json",
    )
    assert code == 0, err
    est = _strict(out)["teachers"]["wavlm"]
    assert est["bits_per_value"] is None and est["bytes"] is None and est["frames"] > 0
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "extract",
        str(corpus),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--dry-run",
    )
    assert code == 0 and "fitted" in out


def test_a_teacher_window_under_the_shortest_segment_is_refused(
    tmp_path, tiny_dir, capsys, monkeypatch
):
    corpus = make_corpus(tmp_path / "c", 2, 1)
    spec = _spec_file(tmp_path, tiny_dir, "max_seconds = 0.05\n")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "extract",
        str(corpus),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "['wavlm']: max_seconds is at most the shortest segment kept (0.1 s)" in err
    assert not (tmp_path / "b").exists()


def test_a_teacher_whose_domains_match_no_segment_is_warned_about(
    tmp_path, tiny_dir, capsys, monkeypatch, caplog
):
    corpus = make_corpus(tmp_path / "c", 2, 1)
    spec = _spec_file(tmp_path, tiny_dir, 'domains = ["speech"]\n')  # the corpus is all 'music'
    args = [
        "extract",
        str(corpus),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--domain",
        "music",
        "--max-seconds",
        "2",
    ]
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--dry-run", "--json")
    (w,) = _strict(out)["warnings"]
    assert (
        code == 0
        and "teacher wavlm: its domains ['speech'] match no segment (the plan has ['music'])" in w
    )
    code, out, _ = run_cli(monkeypatch, capsys, *args, "--dry-run")
    assert "warning: teacher wavlm" in out.replace("\n", "")
    from audistill.extract.spec import load_teacher_specs

    with caplog.at_level(logging.WARNING, logger="audistill.extract.run"):
        s = extract(
            [str(corpus)],
            load_teacher_specs(spec),
            str(tmp_path / "b"),
            ExtractConfig(domain="music", max_seconds=2.0, loader_workers=0),
        )
    assert s.segments_written > 0 and any(
        "match no segment" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("domains", ["[]", '["music", "speech"]'])
def test_a_teacher_covering_some_domain_of_the_plan_is_not_warned_about(
    tmp_path, tiny_dir, capsys, monkeypatch, domains
):
    corpus = make_corpus(tmp_path / "c", 2, 1)
    spec = _spec_file(tmp_path, tiny_dir, f"domains = {domains}\n")
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "extract",
        str(corpus),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--domain",
        "music",
        "--dry-run",
        "--json",
    )
    assert code == 0 and _strict(out)["warnings"] == []
