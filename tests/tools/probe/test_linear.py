"""The probe's classifier: the weight decays trained side by side are each the probe AdamW would
train alone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audistill.tools.probe import linear as lin


def alone(z, y, zv, yv, n_classes, weight_decay, steps, lr, patience):
    """The reference: one probe, its own AdamW, the same selection and early stopping."""
    L, D = z.shape[1:]
    layer_logits = torch.zeros(L, requires_grad=L > 1)
    weight = torch.zeros(n_classes, D, requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    params = [weight, bias] + ([layer_logits] if L > 1 else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    best, since = (-1.0, math.inf, None), 0
    for step in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin._logits(z, layer_logits, weight, bias), y).backward()
        opt.step()
        if step % 5 == 4 or step == steps - 1:
            with torch.no_grad():
                out = lin._logits(zv, layer_logits, weight, bias)
                vloss = float(F.cross_entropy(out, yv))
                vacc = float((out.argmax(1) == yv).float().mean())
            if (vacc, -vloss) > (best[0], -best[1]):
                state = [p.detach().clone() for p in (layer_logits, weight, bias)]
                best, since = (vacc, vloss, state), 0
            else:
                since += 5
                if since >= patience:
                    break
    return best


def data(n, L, D, C, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    z = torch.randn(n, L, D, generator=g)
    z[:, -1, :C] += 1.5 * F.one_hot(y, C).float()  # one informative layer, some noise
    return z, y


@pytest.mark.parametrize("L", [1, 4])
def test_side_by_side_equals_each_probe_alone(L):
    z, y = data(240, L, 24, 5, seed=L)
    zv, yv = data(90, L, 24, 5, seed=L + 10)
    fitted = lin._train_all(z, y, zv, yv, 5, lin.WEIGHT_DECAYS, 300, 1e-2, 30)
    for wd, (state, vacc, vloss) in zip(lin.WEIGHT_DECAYS, fitted, strict=True):
        ref_acc, ref_loss, ref_state = alone(z, y, zv, yv, 5, wd, 300, 1e-2, 30)
        assert vacc == pytest.approx(ref_acc, abs=1e-6)
        assert vloss == pytest.approx(ref_loss, rel=1e-5)
        for got, want in zip(state, ref_state, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_weight_decay_differs_between_probes():
    """Each probe gets its own decay: the strongest decay ends with the smallest weights."""
    z, y = data(200, 2, 16, 4, seed=3)
    fitted = lin._train_all(z, y, z, y, 4, (1e-3, 10.0), 200, 1e-2, 10**6)
    small, large = (f[0][1].norm() for f in fitted)
    assert large < 0.5 * small
