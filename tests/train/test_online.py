"""The online-teacher mode takes the same crops and gives the same targets as the bank."""

import pytest

from audistill.train.config import from_dict
from audistill.train.loop import train
from audistill.train.online import OnlineTeachers

from .conftest import make_teachers, tiny_config


def test_online_teachers_give_the_cached_loss_curve(tiny_bank, tmp_path):
    over = {"optim.max_steps": 3}
    cached = train(from_dict(tiny_config(tiny_bank, str(tmp_path / "c"), **over)))["losses"]
    online = train(from_dict(tiny_config(tiny_bank, str(tmp_path / "o"), **over)),
                   online=OnlineTeachers(make_teachers()))["losses"]
    assert online == pytest.approx(cached, rel=1e-4)


def test_online_records_describe_the_teachers():
    recs = OnlineTeachers(make_teachers()).records()
    assert recs["tmusic"].home_domain == "music" and recs["tmusic"].hop == 640
