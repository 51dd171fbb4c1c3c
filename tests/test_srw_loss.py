"""SRWLoss / srw_loss: Eq. 4-6 by hand, patch-wise groups, accumulation, dtypes, errors, and 2 gloo ranks."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from srw_ranks import CASES, TAU, batch, per_sample_loss, scope, student

from mobilesam_srw import SRWLoss, srw_loss
from mobilesam_srw.srw import average_similarity, srw_weights

RANKS = Path(__file__).with_name("srw_ranks.py")


def eq4_by_hand(features: torch.Tensor) -> torch.Tensor:
    """Eq. 4 literally: an explicit N x N cosine matrix (float64), averaged over j (itself included)."""
    f = features.double()
    n = f.shape[0]
    cos = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            cos[i, j] = f[i] @ f[j] / (f[i].norm() * f[j].norm())
    return cos.mean(dim=1)


def eq5_by_hand(avesim: torch.Tensor, tau: float) -> torch.Tensor:
    e = torch.exp(-avesim.double() / tau)
    return e / e.sum()


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


# --- values -------------------------------------------------------------------------------------------
def test_golden_values_equal_eq4_to_6_by_hand():
    features = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 1, 1], [-1, 0, 2]])
    losses = torch.tensor([0.3, 1.2, 0.7, 2.0])
    avesim = eq4_by_hand(features)
    weights = eq5_by_hand(avesim, 0.5)
    golden_avesim = [0.3149732964, 0.4727197538, 0.5331138830, 0.2172535426]  # (1 + 1/sqrt2 + 0 - 1/sqrt5) / 4, ...
    golden_weights = [0.2784188820, 0.2030868733, 0.1799799717, 0.3385142730]
    torch.testing.assert_close(avesim, torch.tensor(golden_avesim, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(weights, torch.tensor(golden_weights, dtype=torch.float64), atol=1e-9, rtol=0)
    loss = SRWLoss(tau=0.5)(losses, features)  # Eq. 6: sum_i w_i l_i
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(1.1302444388, abs=1e-6)
    assert loss.item() == pytest.approx((weights * losses.double()).sum().item(), abs=1e-6)
    with SRWLoss(tau=0.5).accumulate([features]) as step:
        torch.testing.assert_close(step.weights[0].double(), weights, atol=1e-7, rtol=0)


@pytest.mark.parametrize("normalizer", ["softmax", "reverse", "sum", "uniform"])
def test_sample_wise_equals_the_normalizer_on_eq4_by_hand(normalizer):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(9, 5, generator=generator) + 0.2
    losses = torch.rand(9, generator=generator)
    weights = srw_weights(eq4_by_hand(features), 0.3, normalizer).double()
    expected = (weights * losses.double()).sum().item()
    assert srw_loss(losses, features, tau=0.3, normalizer=normalizer).item() == pytest.approx(expected, abs=1e-6)
    module = SRWLoss(0.3, normalizer=normalizer, scope="local")  # no process group: local = global
    assert module(losses, features).item() == pytest.approx(expected, abs=1e-6)


def test_patch_wise_groups_are_each_images_patches():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(3, 6, 4, generator=generator) + 0.3  # 3 images of 6 patches
    losses = torch.rand(3, 6, generator=generator)
    per_image = [(eq5_by_hand(eq4_by_hand(features[b]), 0.4) * losses[b].double()).sum() for b in range(3)]
    expected = torch.stack(per_image).mean().item()  # Eq. 6 per image, mean over images
    assert SRWLoss(0.4)(losses, features).item() == pytest.approx(expected, abs=1e-6)
    stored = torch.stack([eq4_by_hand(features[b]) for b in range(3)]).float()  # stored avesim [B, N]
    assert SRWLoss(0.4)(losses, avesim=stored).item() == pytest.approx(expected, abs=1e-6)


def test_patch_wise_mask_leaves_padding_out_of_every_group():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 8, 4, generator=generator)
    losses = torch.rand(2, 8, generator=generator)
    valid = [5, 8]  # image 0: 5 patches and 3 padding items (made absurd: they must not count)
    mask = torch.arange(8)[None, :] < torch.tensor(valid)[:, None]
    features[0, 5:] = 1e6
    losses[0, 5:] = float("nan")
    per_image = [(eq5_by_hand(eq4_by_hand(features[b, :n]), 0.5) * losses[b, :n].double()).sum()
                 for b, n in enumerate(valid)]
    loss = SRWLoss(0.5)(losses.nan_to_num(0.0), features, mask=mask)
    assert loss.item() == pytest.approx(torch.stack(per_image).mean().item(), abs=1e-6)
    stored = average_similarity(features, mask=mask)  # Eq. 4 over each image's valid patches, stored once
    assert SRWLoss(0.5)(losses.nan_to_num(0.0), avesim=stored, mask=mask).item() == pytest.approx(loss.item(), abs=1e-6)


def test_low_precision_teacher_features_are_computed_in_float32():
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(16, 32, generator=generator)
    losses = torch.rand(16, generator=generator)
    for dtype in (torch.float16, torch.bfloat16):
        low = features.to(dtype)
        expected = (eq5_by_hand(eq4_by_hand(low.float()), 0.1) * losses.double()).sum().item()
        loss = SRWLoss(0.1)(losses.to(dtype), low)  # a bf16/fp16 loss (autocast) too
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(expected, rel=1e-2)  # the loss's own rounding
        assert SRWLoss(0.1)(losses, low).item() == pytest.approx(expected, abs=1e-6)


def test_weights_ignore_autocast():
    generator = torch.Generator().manual_seed(8)
    features, items = torch.randn(64, 128, generator=generator), torch.randn(3, 40, 16, generator=generator)
    losses, item_losses = torch.rand(64, generator=generator), torch.rand(3, 40, generator=generator)
    expected = SRWLoss(0.05)(losses, features), SRWLoss(0.05)(item_losses, items)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a user's AMP region: the weights stay float32
        inside = SRWLoss(0.05)(losses, features), SRWLoss(0.05)(item_losses, items)
    for got, want in zip(inside, expected):
        assert got.item() == pytest.approx(want.item(), abs=1e-7)


def test_no_gradient_through_the_weights():
    features = torch.randn(6, 4, requires_grad=True)
    losses = torch.rand(6, requires_grad=True)
    SRWLoss(0.5)(losses, features).backward()
    assert features.grad is None
    expected = eq5_by_hand(eq4_by_hand(features.detach()), 0.5).float()
    torch.testing.assert_close(losses.grad, expected, atol=1e-6, rtol=0)  # d loss / d l_i = w_i, a constant


def test_module_holds_no_state():
    srw = SRWLoss(0.7, normalizer="sum", scope="local")
    assert srw.state_dict() == {} and list(srw.parameters()) == []
    assert "tau=0.7" in repr(srw) and "'sum'" in repr(srw)


# --- gradient accumulation ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["samples", "patches", "stored avesim"])
def test_accumulating_four_micro_batches_equals_one_batch(kind):
    generator = torch.Generator().manual_seed(7)
    items = () if kind == "samples" else (5,)
    x = torch.randn(16, *items, 5, generator=generator)
    target = torch.randn(16, *items, 3, generator=generator)
    features = torch.randn(16, *items, 6, generator=generator) + 0.4
    srw = SRWLoss(TAU)
    teacher = average_similarity(features) if kind == "stored avesim" else features  # [16, 5] avesim, or features

    def call(loss, side):
        return srw(loss, side) if kind != "stored avesim" else srw(loss, avesim=side)

    whole_model = student()
    whole = call(per_sample_loss(whole_model, x, target), teacher)
    whole.backward()

    model = student()
    sides = list(teacher.split(4))
    total = 0.0
    keyword = {"avesim": sides} if kind == "stored avesim" else {"teacher_features": sides}
    with srw.accumulate(**keyword) as step:
        assert len(step.weights) == 4
        for part_x, part_t, side in zip(x.split(4), target.split(4), sides):
            loss = call(per_sample_loss(model, part_x, part_t), side)  # not divided by 4
            loss.backward()
            total += loss.item()
    assert total == pytest.approx(whole.item(), abs=1e-6)
    for name, grad in grads(whole_model).items():
        torch.testing.assert_close(grads(model)[name], grad, atol=1e-6, rtol=0)
    if kind == "samples":  # the step's weights are Eq. 5 over all 16 samples
        expected = eq5_by_hand(eq4_by_hand(features), TAU).float()
        torch.testing.assert_close(torch.cat(step.weights), expected, atol=1e-6, rtol=0)


def test_accumulate_needs_the_same_tensors():
    srw = SRWLoss(0.5)
    features = [torch.randn(4, 3), torch.randn(4, 3)]
    with srw.accumulate(features):
        with pytest.raises(ValueError, match="same tensor objects"):
            srw(torch.rand(4), features[0].clone())
        with pytest.raises(ValueError, match="already inside"):
            with srw.accumulate(features):
                pass
        with pytest.raises(ValueError, match="per_sample_loss"):
            srw(torch.rand(3), features[1])
    assert srw(torch.rand(4), features[0]).ndim == 0  # outside the block: a plain call again


# --- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.0, -1.0, math.inf, math.nan])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match="tau") as error:
        SRWLoss(tau)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="tau"):
        srw_loss(torch.rand(4), torch.randn(4, 3), tau=tau)


BAD_CALLS = {
    "normalizer": lambda: SRWLoss(0.5, normalizer="softmin"),
    "scope": lambda: SRWLoss(0.5, scope="world"),
    "per_sample_loss": lambda: SRWLoss(0.5)(torch.tensor(1.0), torch.randn(4, 3)),
    "per_sample_loss ": lambda: SRWLoss(0.5)(torch.ones(4, 2, 2), torch.randn(4, 2, 2, 3)),
    "teacher_features": lambda: SRWLoss(0.5)(torch.rand(4), torch.randn(5, 3)),
    "teacher_features ": lambda: SRWLoss(0.5)(torch.rand(4), torch.randn(4, 3, 2)),
    "teacher_features  ": lambda: SRWLoss(0.5)(torch.rand(4), None),
    "teacher_features   ": lambda: SRWLoss(0.5)(torch.rand(1), torch.randn(1, 3)),  # a group of one
    "teacher_features    ": lambda: SRWLoss(0.5)(torch.rand(4), torch.ones(4, 3, dtype=torch.long)),
    "avesim": lambda: SRWLoss(0.5)(torch.rand(4), avesim=torch.rand(4)),
    "avesim ": lambda: SRWLoss(0.5)(torch.rand(2, 4), avesim=torch.rand(2, 5)),
    "teacher_features, avesim": lambda: SRWLoss(0.5)(torch.rand(2, 4), torch.randn(2, 4, 3), avesim=torch.rand(2, 4)),
    "mask": lambda: SRWLoss(0.5)(torch.rand(2, 4), torch.randn(2, 4, 3), mask=torch.ones(2, 3, dtype=torch.bool)),
    "mask ": lambda: SRWLoss(0.5)(torch.rand(4), torch.randn(4, 3), mask=torch.ones(4, dtype=torch.bool)),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_arguments_are_one_line_naming_the_argument(name):
    with pytest.raises(ValueError) as error:
        BAD_CALLS[name]()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(name.strip()), message


# --- two gloo ranks -----------------------------------------------------------------------------------
def one_process(name: str) -> tuple[float, dict[str, torch.Tensor]]:
    """The reference: one process on the whole batch (``local``: the mean of the two ranks' groups)."""
    data = batch(name)
    model = student()
    srw = SRWLoss(TAU, scope=scope(name))
    if name == "local":
        halves = [[row for rows in rank for row in rows] for rank in CASES[name]]
        loss = torch.stack([srw(per_sample_loss(model, data["x"][h], data["target"][h]), data["features"][h])
                            for h in halves]).mean()
    else:
        loss = srw(per_sample_loss(model, data["x"], data["target"]), data["features"], mask=data.get("mask"))
    loss.backward()
    return loss.item(), grads(model)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("srw_ranks")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(RANKS.parent)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(RANKS), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_gloo_ranks_give_the_gradient_of_one_process_on_the_whole_batch(two_ranks, name):
    value, expected = one_process(name)
    ranks = [torch.load(two_ranks / f"{name}_{rank}.pt", weights_only=True) for rank in range(2)]
    for rank in ranks:  # after DDP's averaging, every rank holds the gradient of the whole batch's objective
        for parameter, grad in expected.items():
            torch.testing.assert_close(rank[parameter], grad, atol=1e-6, rtol=0)
    assert (ranks[0]["value"] + ranks[1]["value"]).item() / 2 == pytest.approx(value, abs=1e-6)


def test_guide_examples_run():
    guide = Path(__file__).resolve().parents[1] / "docs" / "srw_loss.md"
    blocks = re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, str(guide), "exec"), {})
