"""Corpus inputs that would read the wrong files, crash later, or crash now: refused at planning,
naming the row or member, or recorded as an error; never a traceback."""

import io
import json
import os
import re
import tarfile

import pytest

from audistill.extract.corpus import plan_segments, scan_inputs
from audistill.extract.errors import CorpusError

from .conftest import run_cli, write_wav


def _manifest(path, *rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_manifest_paths_outside_its_folder_need_allow_outside_root(tmp_path):
    write_wav(tmp_path / "outside.wav", 0.5)
    write_wav(tmp_path / "m" / "inside.wav", 0.5)
    ok = {"id": "in", "path": "inside.wav"}
    for n, loc in enumerate(
        ["../outside.wav", str(tmp_path / "outside.wav"), "sub/../../outside.wav"]
    ):
        m = _manifest(tmp_path / "m" / f"m{n}.jsonl", ok, {"id": "out", "path": loc})
        with pytest.raises(
            CorpusError, match=rf"m{n}.jsonl row 2: path '{loc}' is outside the manifest's folder"
        ):
            scan_inputs([str(m)])
        items = scan_inputs([str(m)], allow_outside_root=True)
        assert os.path.samefile(items[1].path, tmp_path / "outside.wav")
    m = _manifest(
        tmp_path / "m" / "abs.jsonl", {"id": "in", "path": str(tmp_path / "m" / "inside.wav")}
    )
    assert len(scan_inputs([str(m)])) == 1  # an absolute path inside the folder is inside
    os.symlink(
        tmp_path / "m", tmp_path / "link"
    )  # the folder under another name; the path written resolved
    assert len(scan_inputs([str(tmp_path / "link" / "abs.jsonl")])) == 1


def test_the_cli_refuses_an_outside_path_in_one_line_and_takes_the_flag(
    tmp_path, tiny_dir, capsys, monkeypatch
):
    write_wav(tmp_path / "outside.wav", 0.5)
    m = _manifest(tmp_path / "m" / "m.jsonl", {"id": "out", "path": "../outside.wav"})
    spec = tmp_path / "t.toml"
    spec.write_text(f'[[teacher]]\nname = "w"\nsource = "{tiny_dir("wavlm")}"\ncodec = "float16"\n')
    capsys.readouterr()  # the tiny model's save messages
    args = [
        "extract",
        str(m),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--dry-run",
        "--json",
    ]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "m.jsonl row 1" in err
        and "--allow-outside-root" in err
    )
    code, out, err = run_cli(monkeypatch, capsys, *args, "--allow-outside-root")
    assert code == 0 and json.loads(out)["segments"] == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"path": 42}, "path must be text, not 42"),
        ({"path": "a.wav", "domain": ["a"]}, 'domain must be text, not ["a"]'),
        ({"path": "a.wav", "dataset": {"x": 1}}, 'dataset must be text, not {"x": 1}'),
        ({"path": "a.wav", "member": 3}, "member must be text, not 3"),
        ({"path": "a.wav", "id": True}, "id must be text or an integer, not true"),
        ({"path": "a.wav", "id": [1]}, "id must be text or an integer, not [1]"),
    ],
)
def test_manifest_values_of_the_wrong_json_type_are_refused_naming_the_row(tmp_path, row, message):
    write_wav(tmp_path / "a.wav", 0.5)
    m = _manifest(tmp_path / "m.jsonl", {"path": "a.wav"}, row)
    with pytest.raises(CorpusError, match="m.jsonl row 2: " + re.escape(message)):
        scan_inputs([str(m)])


def test_an_integer_id_is_still_a_name(tmp_path):
    write_wav(tmp_path / "a.wav", 0.5)
    (item,) = scan_inputs([str(_manifest(tmp_path / "m.jsonl", {"id": 7, "path": "a.wav"}))])
    assert item.source == "7"


def _tar_with_meta(path, meta: bytes):
    with tarfile.open(path, "w") as tf:
        for name, data in (
            ("k.wav", (write_wav(path.parent / "x.wav", 0.5)).read_bytes()),
            ("k.json", meta),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b'{"domain": ["a"]}', r'member k.json: domain must be text, not \["a"\]'),
        (b'["speech"]', "member k.json is not a JSON object"),
        (b"{not json", "member k.json is not JSON"),
    ],
)
def test_tar_metadata_of_the_wrong_type_is_refused_naming_the_member(tmp_path, meta, message):
    tar = _tar_with_meta(tmp_path / "a.tar", meta)
    with pytest.raises(CorpusError, match=message):
        scan_inputs([str(tar)])


def test_tar_metadata_sets_the_domain(tmp_path):
    (item,) = scan_inputs(
        [str(_tar_with_meta(tmp_path / "a.tar", b'{"domain": "music", "dataset": "d"}'))]
    )
    assert (item.domain, item.dataset) == ("music", "d")


def test_a_symlink_loop_and_an_unreadable_folder_are_recorded_and_the_walk_goes_on(
    tmp_path, monkeypatch
):
    c = tmp_path / "c"
    write_wav(c / "a.wav", 0.5)
    write_wav(c / "locked" / "x.wav", 0.5)
    write_wav(c / "z" / "b.wav", 0.5)
    os.symlink("loop2.wav", c / "loop1.wav")
    os.symlink("loop1.wav", c / "loop2.wav")
    real = os.scandir
    locked = str(c / "locked")

    def scandir(
        path,
    ):  # a folder this user may not list (tests run as root, whom chmod does not stop)
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    segs, errs = plan_segments(scan_inputs([str(c)]))
    assert [s.source for s in segs] == ["c/a.wav", "c/z/b.wav"]
    reasons = {e["file"].rsplit("/", 1)[-1]: e["reason"] for e in errs}
    assert reasons == {
        "locked": "unreadable folder: Permission denied",
        "loop1.wav": "cannot inspect: Too many levels of symbolic links",
        "loop2.wav": "cannot inspect: Too many levels of symbolic links",
    }


def test_an_object_store_row_without_credentials_is_one_line(
    tmp_path, tiny_dir, capsys, monkeypatch
):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    m = _manifest(tmp_path / "m.jsonl", {"id": "x", "path": "s3://bucket/x.wav"})
    spec = tmp_path / "t.toml"
    spec.write_text(f'[[teacher]]\nname = "w"\nsource = "{tiny_dir("wavlm")}"\ncodec = "float16"\n')
    capsys.readouterr()  # the tiny model's save messages
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "extract",
        str(m),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--dry-run",
        "--storage-options",
        '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}',
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot open s3://bucket/x.wav: NoCredentialsError" in err
