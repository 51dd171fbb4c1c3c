"""SRW core (Eq. 4-7) against naive definitions written here."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mobilesam_srw.losses import feature_mse
from mobilesam_srw.srw import average_similarity, reweighted_mean, srw_weights


def naive_average_similarity(features: torch.Tensor) -> torch.Tensor:
    """Eq. 4 literally: the N x N cosine matrix, averaged over j. ``[..., N, D] -> [..., N]``."""
    f = features.double()
    norms = f.norm(dim=-1, keepdim=True)
    cos = (f @ f.transpose(-1, -2)) / (norms * norms.transpose(-1, -2))
    return cos.mean(dim=-1)


@settings(max_examples=60, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    n=st.integers(2, 40),
    d=st.integers(1, 33),
    seed=st.integers(0, 2**31 - 1),
)
def test_average_similarity_equals_naive_matrix(lead, n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(*lead, n, d, generator=generator) + 0.3
    exact = average_similarity(features)
    assert exact.shape == (*lead, n)
    assert exact.dtype == torch.float32
    torch.testing.assert_close(exact.double(), naive_average_similarity(features), atol=1e-5, rtol=0)


def test_average_similarity_other_item_dim():
    features = torch.randn(3, 5, 7)  # items on dim 0
    moved = features.transpose(0, 1)  # [5, 3, 7]: groups of 3 along dim -2
    torch.testing.assert_close(average_similarity(features, dim=0), average_similarity(moved).T)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_average_similarity_low_precision_inputs(dtype):
    features = torch.randn(2, 64, 32)
    low = average_similarity(features.to(dtype))
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.double(), naive_average_similarity(features.to(dtype).float()), atol=1e-5, rtol=0)


def test_average_similarity_zero_vectors_are_finite():
    features = torch.randn(6, 4)
    features[2] = 0
    result = average_similarity(features)
    assert torch.isfinite(result).all()
    assert result[2] == 0
    assert torch.isfinite(average_similarity(torch.zeros(4, 3))).all()


def test_identical_items_have_similarity_one():
    torch.testing.assert_close(average_similarity(torch.ones(5, 3) * 2.5), torch.ones(5))


@pytest.mark.parametrize("normalizer", ["softmax", "reverse", "sum", "uniform"])
def test_weights_sum_to_one_and_are_non_negative(normalizer):
    avesim = torch.rand(4, 100)
    weights = srw_weights(avesim, tau=0.5, normalizer=normalizer)
    assert weights.shape == avesim.shape
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    assert (weights >= 0).all()


def test_softmax_weights_match_eq5_and_ignore_constant_shift():
    avesim = torch.tensor([0.1, 0.4, 0.2, 0.9])
    tau = 0.3
    expected = torch.exp(-avesim / tau) / torch.exp(-avesim / tau).sum()
    torch.testing.assert_close(srw_weights(avesim, tau), expected)
    torch.testing.assert_close(srw_weights(avesim + 7.0, tau), expected)


def test_lower_similarity_gets_larger_weight():
    avesim = torch.tensor([0.9, 0.1, 0.5, 0.3])
    order = torch.argsort(avesim)
    for normalizer in ("softmax", "sum"):
        weights = srw_weights(avesim, 0.5, normalizer)[order]
        assert (weights[:-1] > weights[1:]).all(), normalizer
    reverse = srw_weights(avesim, 0.5, "reverse")[order]
    assert (reverse[:-1] < reverse[1:]).all()


def test_sum_normalizer_is_eq7_of_negated_similarity():
    avesim = torch.tensor([0.2, 0.5, 0.8, 0.6])
    x = -avesim
    expected = (x - x.min()) / (x - x.min()).sum()
    torch.testing.assert_close(srw_weights(avesim, 1.0, "sum"), expected)
    torch.testing.assert_close(srw_weights(torch.full((2, 5), 0.3), 1.0, "sum"), torch.full((2, 5), 0.2))


def test_large_tau_tends_to_uniform_and_small_tau_to_argmin():
    avesim = torch.rand(3, 50)
    torch.testing.assert_close(srw_weights(avesim, 1e6), torch.full((3, 50), 1 / 50), atol=1e-6, rtol=0)
    sharp = srw_weights(avesim, 1e-3)
    assert torch.isfinite(sharp).all()
    assert (sharp.argmax(-1) == avesim.argmin(-1)).all()
    assert torch.isfinite(srw_weights(torch.tensor([0.0, 1.0, 50.0]), 1e-3)).all()


def test_uniform_weights_give_plain_mean():
    losses = torch.rand(4, 30)
    weights = srw_weights(torch.rand(4, 30), 0.5, "uniform")
    torch.testing.assert_close(reweighted_mean(losses, weights), losses.mean())


def test_reweighted_mean_is_eq6_averaged_over_groups():
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 2.0]])
    weights = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.5, 0.5]])
    assert reweighted_mean(losses, weights).item() == pytest.approx(((0.5 + 0.5 + 0.75) + 1.0) / 2)


def test_gradients_reach_student_but_not_weights():
    student = torch.randn(2, 8, 4, 4, requires_grad=True)
    teacher_features = torch.randn(2, 8, 4, 4, requires_grad=True)
    avesim = average_similarity(teacher_features.flatten(2).transpose(1, 2))
    weights = srw_weights(avesim, 0.5)
    assert not weights.requires_grad
    loss = reweighted_mean(feature_mse(student, teacher_features.detach(), dim=1), weights)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher_features.grad is None


@pytest.mark.parametrize("tau", [0.0, -1.0, math.inf, math.nan])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        srw_weights(torch.rand(5), tau)


def test_unknown_normalizer():
    with pytest.raises(ValueError, match="normalizer"):
        srw_weights(torch.rand(5), 0.5, "softmin")


def test_shape_mismatch():
    with pytest.raises(ValueError, match="weights"):
        reweighted_mean(torch.rand(2, 5), torch.rand(2, 4))


def test_groups_of_one_item():
    with pytest.raises(ValueError, match="features"):
        average_similarity(torch.rand(3, 1, 8))
    with pytest.raises(ValueError, match="avesim"):
        srw_weights(torch.rand(3, 1), 0.5)


def test_features_without_item_axis():
    with pytest.raises(ValueError, match="features"):
        average_similarity(torch.rand(8))
