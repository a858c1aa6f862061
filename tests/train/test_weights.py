import torch

from audistill.train.weights import domain_weights

HOMES = ["speech", "music", "sound"]


def w(domains, present=None, omega=10.0):
    p = torch.ones(len(domains), 3, dtype=torch.bool) if present is None else torch.tensor(present)
    return domain_weights(domains, HOMES, p, omega).double()


def test_matched_domain():
    got = w(["music"])[0]
    torch.testing.assert_close(got, torch.tensor([1 / 12, 10 / 12, 1 / 12], dtype=torch.float64))


def test_unmatched_and_unknown_domain_are_uniform():
    got = w(["unknown", "bioacoustics"])
    torch.testing.assert_close(got, torch.full((2, 3), 1 / 3, dtype=torch.float64))


def test_omega_one_is_plain_multi_teacher():
    torch.testing.assert_close(
        w(["speech"], omega=1.0)[0], torch.full((3,), 1 / 3, dtype=torch.float64)
    )


def test_skipped_teacher_gets_zero_and_rest_renormalized():
    got = w(
        ["speech", "music", "speech"],
        present=[[True, False, True], [True, False, True], [False, False, False]],
    )
    torch.testing.assert_close(got[0], torch.tensor([10 / 11, 0, 1 / 11], dtype=torch.float64))
    torch.testing.assert_close(got[1], torch.tensor([0.5, 0, 0.5], dtype=torch.float64))
    assert got[2].sum() == 0
