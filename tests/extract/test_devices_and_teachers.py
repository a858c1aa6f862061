"""A device this machine lacks, or a damaged teacher folder: one line naming it, before any work."""

import shutil

import pytest
import torch

from audistill.extract.errors import ExtractError, TeacherError
from audistill.extract.run import ExtractConfig
from audistill.extract.spec import TeacherSpec
from audistill.extract.teachers import load_teacher

from .conftest import make_corpus, run_cli


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("nosuchdev", "device 'nosuchdev' is not a torch device"),
        ("cuda", "device 'cuda': no cuda device on this machine"),
        ("cuda:7", "device 'cuda:7'"),
    ],
)
def test_a_device_this_machine_lacks_is_refused_before_any_work(
    tmp_path, tiny_dir, capsys, monkeypatch, device, message
):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    corpus = make_corpus(tmp_path / "c", 1, 0)
    spec = tmp_path / "t.toml"
    spec.write_text(f'[[teacher]]\nname = "w"\nsource = "{tiny_dir("wavlm")}"\ncodec = "float16"\n')
    capsys.readouterr()
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "extract",
        str(corpus),
        "--teachers",
        str(spec),
        "--bank",
        str(tmp_path / "b"),
        "--device",
        device,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "b").exists()
    with pytest.raises(ExtractError, match=message):
        ExtractConfig(device=device)


def _damage(folder, what):
    if what == "config not JSON":
        (folder / "config.json").write_text('{"model_type": "wavlm", ')
    elif what == "config value of the wrong type":
        (folder / "config.json").write_text('{"model_type": "wavlm", "hidden_size": "big"}')
    elif what == "weights truncated":
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif what == "weights empty":
        (folder / "model.safetensors").write_bytes(b"")
    else:
        (folder / "preprocessor_config.json").write_text("{oops")


@pytest.mark.parametrize(
    "what",
    [
        "config not JSON",
        "config value of the wrong type",
        "weights truncated",
        "weights empty",
        "preprocessor config not JSON",
    ],
)
def test_a_damaged_teacher_folder_is_a_teacher_error_naming_it(tmp_path, tiny_dir, what):
    folder = tmp_path / "teacher"
    shutil.copytree(tiny_dir("wavlm"), folder)
    _damage(folder, what)
    with pytest.raises(TeacherError, match=f"teacher 'w': .*{folder}"):
        load_teacher(TeacherSpec(name="w", source=str(folder)))
