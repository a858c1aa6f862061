import pytest

from audistill.extract.errors import SpecError
from audistill.extract.spec import TeacherSpec, load_teacher_specs, resolve_layers


def test_toml_and_yaml_give_the_same_specs(tmp_path):
    (tmp_path / "t.toml").write_text(
        '[[teacher]]\nname = "wavlm"\nsource = "/m/wavlm"\nlayers = "sparse:4"\ndomains = '
        '["speech"]\n'
        'codec = "bfloat16"\n[[teacher]]\nname = "ast"\nsource = "/m/ast"\nlayers = [1, '
        "2]\nmax_seconds = 10.24\n"
    )
    (tmp_path / "t.yaml").write_text(
        "teachers:\n  - {name: wavlm, source: /m/wavlm, layers: 'sparse:4', domains: [speech], "
        "codec: bfloat16}\n"
        "  - {name: ast, source: /m/ast, layers: [1, 2], max_seconds: 10.24}\n"
    )
    a, b = load_teacher_specs(tmp_path / "t.toml"), load_teacher_specs(tmp_path / "t.yaml")
    assert a == b
    assert a[0].domains == ("speech",) and a[1].layers == (1, 2) and a[1].max_seconds == 10.24
    assert a[0].runs_on("speech") and not a[0].runs_on("music") and a[1].runs_on("music")


def test_every_problem_is_reported_at_once(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(
        '[[teacher]]\nname = "bad name"\nsource = "x"\nlayers = "some"\ndtype = "int3"\ncodec = '
        '"nope"\n'
        'colour = 1\n[[teacher]]\nsource = "y"\nmax_seconds = -1\nframe_policy = "25hz"\n'
        '[[teacher]]\nname = "a"\nsource = "z"\n[[teacher]]\nname = "a"\nsource = "z"\n'
    )
    with pytest.raises(SpecError) as e:
        load_teacher_specs(p)
    msg = str(e.value)
    for needle in (
        "not a safe key",
        "layers 'some'",
        "dtype 'int3'",
        "unknown codec 'nope'",
        "unknown key 'colour'",
        "missing 'name'",
        "max_seconds",
        "frame_policy '25hz'",
        "used more than once",
    ):
        assert needle in msg, needle


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_teacher_specs(tmp_path / "none.toml")
    (tmp_path / "x.toml").write_text("[[teacher]\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_teacher_specs(tmp_path / "x.toml")
    (tmp_path / "e.toml").write_text("")
    with pytest.raises(SpecError, match="no teachers"):
        load_teacher_specs(tmp_path / "e.toml")


def test_resolve_layers():
    assert resolve_layers("sparse:4", 12) == [3, 6, 9, 12]
    assert resolve_layers("sparse:8", 24) == [3, 6, 9, 12, 15, 18, 21, 24]
    assert resolve_layers("all", 3) == [0, 1, 2, 3]
    assert resolve_layers((3, 1, 1), 4) == [1, 3]
    with pytest.raises(SpecError):
        resolve_layers((5,), 4)
    with pytest.raises(SpecError):
        resolve_layers("sparse:13", 12)


def test_spec_json_round_trip():
    s = TeacherSpec(name="t", source="s", layers=(1, 2), domains=("speech",))
    assert (
        TeacherSpec(
            **{
                **s.to_json(),
                "layers": tuple(s.to_json()["layers"]),
                "domains": tuple(s.to_json()["domains"]),
            }
        )
        == s
    )


def test_the_shipped_teacher_specs_parse_and_name_known_kinds():
    from pathlib import Path

    from audistill.extract.teachers import plugin_names

    shipped = sorted((Path(__file__).parents[2] / "extract" / "configs").glob("*.toml"))
    assert shipped
    for path in shipped:
        specs = load_teacher_specs(path)
        assert specs and all(s.kind == "hf" or s.kind in plugin_names() for s in specs), path
