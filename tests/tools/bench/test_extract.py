"""bench-extract on CPU with the tiny model: the three paths run and the targets are reported."""

import json

import typer
from typer.testing import CliRunner

from audistill.tools.bench.extract import register


def test_bench_extract_cli_json(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = typer.Typer()
    register(app)

    @app.command()
    def _other():  # a second command keeps typer from collapsing the app into one command
        pass

    r = CliRunner().invoke(app, ["bench-extract", "--model", "tiny", "--device", "cpu", "--minutes", "0.2",
                                 "--naive-minutes", "0.05", "--rss-minutes", "0", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for k in ("a_bare_forward_sps", "b_extract_sps", "c_naive_sps"):
        assert out[k] > 0
    assert out["b_over_a"] == out["b_extract_sps"] / out["a_bare_forward_sps"]
    assert out["b_over_c"] == out["b_extract_sps"] / out["c_naive_sps"]
    assert isinstance(out["target_b_ge_0.85a"], bool) and isinstance(out["target_b_ge_3c"], bool)
    assert 0 < out["variants"][0]["padding_efficiency"] <= 1
    assert all(0 < e <= 1 for e in out["a_padding_efficiency"].values())
    assert out["variants"][0]["pace"] in ("batches", "run")  # one shard: no commit-to-commit pace
    assert out["audio_seconds"] >= 12 and out["failed"] == 0 and 2 < out["bits_per_value"] <= 10  # int8-delta


def test_a_failing_variant_is_reported_and_fails_the_command(tmp_path, monkeypatch):
    """One (b) variant failing (say, process writers on a machine without shared memory) leaves
    the others measured and printed, names the failure, and exits 1."""
    import inspect

    import audistill.tools.bench.extract as bench

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = bench.full_extract

    def flaky(*args, **kwargs):
        if inspect.signature(real).bind(*args, **kwargs).arguments["writer_kind"] == "process":
            raise OSError("no space left on /dev/shm")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "full_extract", flaky)
    app = typer.Typer()
    register(app)

    @app.command()
    def _other():
        pass

    r = CliRunner().invoke(app, ["bench-extract", "--model", "tiny", "--device", "cpu", "--minutes", "0.2",
                                 "--writer-kind", "thread,process", "--naive-minutes", "0.05", "--rss-minutes", "0",
                                 "--no-ceiling", "--json"])
    assert r.exit_code == 1
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert [v["writer_kind"] for v in out["variants"]] == ["thread"] and out["b_extract_sps"] > 0
    assert len(out["errors"]) == 1 and "process writers" in out["errors"][0] and "/dev/shm" in out["errors"][0]
