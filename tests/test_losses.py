"""Per-item losses against independent batch formulations and pinned golden values."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mobilesam_srw.losses import dkd_loss, feature_mse, fitnet_loss, kd_loss


def fixed_logits(seed: int, batch: int = 6, classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator) * 3
    teacher = torch.randn(batch, classes, generator=generator) * 3
    target = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, target


def reference_dkd_batch(logits_student, logits_teacher, target, alpha, beta, temperature):
    """DKD's original batch formulation (Zhao et al. 2022), with its masks and sums."""
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = ~gt_mask

    def cat_mask(t):
        return torch.cat([(t * gt_mask).sum(1, keepdim=True), (t * other_mask).sum(1, keepdim=True)], dim=1)

    pred_student = cat_mask(F.softmax(logits_student / temperature, dim=1))
    pred_teacher = cat_mask(F.softmax(logits_teacher / temperature, dim=1))
    tckd = F.kl_div(torch.log(pred_student), pred_teacher, reduction="sum") * temperature**2 / target.shape[0]
    teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_student_part2, teacher_part2, reduction="sum") * temperature**2 / target.shape[0]
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (1.0, 2.0, 1.0), (0.5, 1.0, 2.0)])
def test_dkd_batch_mean_equals_original_formulation(seed, alpha, beta, temperature):
    student, teacher, target = fixed_logits(seed)
    per_sample = dkd_loss(student, teacher, target, alpha, beta, temperature)
    assert per_sample.shape == (6,)
    expected = reference_dkd_batch(student, teacher, target, alpha, beta, temperature)
    torch.testing.assert_close(per_sample.mean(), expected, atol=1e-5, rtol=1e-5)


def test_dkd_golden_value():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    teacher = torch.tensor([[3.0, -0.5, 0.0], [1.0, 0.0, 2.0]])
    target = torch.tensor([0, 2])
    # Written out with numpy: TCKD on (p_target, 1 - p_target), NCKD on the renormalised rest.
    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    expected = []
    for s, t, y in zip(student.numpy(), teacher.numpy(), target.numpy()):
        ps, pt = softmax(s / 2.0), softmax(t / 2.0)
        bs, bt = np.array([ps[y], 1 - ps[y]]), np.array([pt[y], 1 - pt[y]])
        rest = [k for k in range(3) if k != y]
        ns, nt = ps[rest] / ps[rest].sum(), pt[rest] / pt[rest].sum()
        tckd = (bt * np.log(bt / bs)).sum()
        nckd = (nt * np.log(nt / ns)).sum()
        expected.append((1.0 * tckd + 8.0 * nckd) * 4.0)
    got = dkd_loss(student, teacher, target, alpha=1.0, beta=8.0, temperature=2.0)
    np.testing.assert_allclose(got.numpy(), np.array(expected), rtol=1e-5)
    np.testing.assert_allclose(got.numpy(), [4.0768147, 4.0421343], rtol=1e-5)


def test_dkd_gradients_are_finite():
    student, teacher, target = fixed_logits(5)
    student.requires_grad_(True)
    dkd_loss(student * 20, teacher * 20, target).sum().backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_is_eq1_per_sample(temperature):
    student, teacher, _ = fixed_logits(3)
    per_sample = kd_loss(student, teacher, temperature)
    batch = F.kl_div(
        F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1), reduction="batchmean"
    ) * temperature**2
    torch.testing.assert_close(per_sample.mean(), batch)
    assert per_sample.shape == (6,)


def test_kd_golden_value_and_zero_for_equal_logits():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    # p_t = (1/(1+e), e/(1+e)), p_s reversed: KL = (p_t1 - p_t0) * 1 = tanh(1/2) at T=1.
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(np.tanh(0.5), rel=1e-6)
    assert kd_loss(teacher, teacher, 4.0).abs().max().item() < 1e-6


def test_feature_mse_sam_shape_and_value():
    student = torch.zeros(2, 4, 3, 5)
    teacher = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).reshape(2, 4, 3, 5)
    per_patch = feature_mse(student, teacher, dim=1)
    assert per_patch.shape == (2, 15)
    expected = teacher.pow(2).mean(1).flatten(1)
    torch.testing.assert_close(per_patch, expected)
    torch.testing.assert_close(per_patch.mean(), F.mse_loss(student, teacher))


def test_feature_mse_clip_shape():
    student, teacher = torch.randn(7, 512), torch.randn(7, 512)
    per_sample = feature_mse(student, teacher, dim=-1)
    assert per_sample.shape == (7,)
    torch.testing.assert_close(per_sample, ((student - teacher) ** 2).mean(-1))


def test_feature_mse_low_precision_is_float32():
    student = torch.randn(2, 8, 4, 4).bfloat16()
    assert feature_mse(student, torch.zeros_like(student)).dtype == torch.float32


def test_fitnet_per_sample_mean_equals_batch_mse():
    student, teacher = torch.randn(5, 16, 8, 8), torch.randn(5, 16, 8, 8)
    per_sample = fitnet_loss(student, teacher)
    assert per_sample.shape == (5,)
    torch.testing.assert_close(per_sample.mean(), F.mse_loss(student, teacher))
    assert fitnet_loss(torch.ones(1, 2, 2), torch.zeros(1, 2, 2)).item() == 1.0


@pytest.mark.parametrize("loss", [feature_mse, fitnet_loss, kd_loss])
def test_shape_mismatch_is_value_error(loss):
    with pytest.raises(ValueError, match="student shape"):
        loss(torch.rand(2, 3), torch.rand(2, 4))


def test_dkd_bad_target_shape():
    with pytest.raises(ValueError, match="target"):
        dkd_loss(torch.rand(2, 3), torch.rand(2, 3), torch.tensor([0, 1, 2]))
