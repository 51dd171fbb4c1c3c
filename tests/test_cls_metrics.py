"""Top-k accuracy and Table 4's tail bands on hand-made batches."""

from __future__ import annotations

import math

import pytest
import torch

from mobilesam_srw.metrics import (
    ClassificationMeter,
    band_names,
    classification_metrics,
    rank_bands,
    sample_bands,
    topk_accuracy,
)

NUM_CLASSES = 10


def hand_made_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """64 samples: 48 typical ones (all the teacher feature e0) and 16 tail ones (near e1, e2),
    the tail at every 4th position. Typical ones tie, so they rank in batch order: the first 16
    by position fill ranks 1-16, and so on; the tail fills ranks 49-64.

    The student is right on 16 of ranks 1-16, 8 of 17-32, 4 of 33-48 and 2 of 49-64.
    """
    features = torch.zeros(64, 3)
    tail = [i for i in range(64) if i % 4 == 3]
    typical = [i for i in range(64) if i % 4 != 3]
    features[typical, 0] = 1.0
    for k, i in enumerate(tail):  # orthogonal to e0: cosine 0 with every typical sample
        features[i, 1], features[i, 2] = 1.0, 0.1 * k
    labels = torch.arange(64) % NUM_CLASSES
    right_per_band = {0: 16, 1: 8, 2: 4, 3: 2}
    members = [typical[0:16], typical[16:32], typical[32:48], tail]
    correct = [i for band, group in enumerate(members) for i in group[: right_per_band[band]]]
    predicted = (labels + 1) % NUM_CLASSES
    predicted[correct] = labels[correct]
    logits = torch.nn.functional.one_hot(predicted, NUM_CLASSES).float()
    return logits, labels, features, tail


def test_bands_of_a_hand_made_batch():
    logits, labels, features, tail = hand_made_batch()
    bands = rank_bands(features)
    assert bands[tail].tolist() == [3] * 16
    typical_bands = [int(bands[i]) for i in range(64) if i % 4 != 3]
    assert typical_bands == [0] * 16 + [1] * 16 + [2] * 16
    metrics = classification_metrics(logits, labels, features)
    assert metrics.band_names == ("1-16", "17-32", "33-48", "49-64")
    assert metrics.band_counts == (16, 16, 16, 16)
    assert metrics.band_accuracy == (100.0, 50.0, 25.0, 12.5)
    assert metrics.top1 == pytest.approx(100 * 30 / 64)
    assert metrics.num_samples == 64
    assert metrics.as_dict()["bands"]["49-64"] == 12.5


def test_bands_follow_eq4_against_the_full_similarity_matrix():
    features = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    normalised = torch.nn.functional.normalize(features, dim=1)
    avesim = (normalised @ normalised.T).mean(dim=1)  # Eq. 4 written out
    ranks = torch.argsort(avesim, descending=True)
    expected = torch.empty(64, dtype=torch.long)
    expected[ranks] = torch.arange(64) // 16
    assert torch.equal(rank_bands(features), expected)


def test_partial_last_batch_uses_quarters_and_a_single_sample_no_band():
    logits, labels, features, _ = hand_made_batch()
    extra = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    bands = sample_bands(torch.cat([features, extra]))
    assert torch.bincount(bands[64:], minlength=4).tolist() == [1, 2, 1, 2]  # edges 0, 1, 3, 4, 6 of 6
    one_more = sample_bands(torch.cat([features, extra[:1]]))
    assert one_more[64].item() == -1
    metrics = classification_metrics(
        torch.cat([logits, logits[:1]]), torch.cat([labels, labels[:1]]), torch.cat([features, extra[:1]])
    )
    assert metrics.num_samples == 65 and sum(metrics.band_counts) == 64
    assert metrics.top1 == pytest.approx(100 * 31 / 65)


def test_meter_over_any_loader_batch_size_equals_one_call():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(150, NUM_CLASSES, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (150,), generator=generator)
    features = torch.randn(150, 8, generator=generator)
    whole = classification_metrics(logits, labels, features)
    meter = ClassificationMeter()
    for start in range(0, 150, 37):
        meter.update(logits[start : start + 37], labels[start : start + 37], features[start : start + 37])
    meter.update(logits[:0], labels[:0], features[:0])
    assert meter.compute() == whole
    assert whole.band_counts == (16 + 16 + 5, 16 + 16 + 6, 16 + 16 + 5, 16 + 16 + 6)  # last batch: 22


def test_topk_accuracy():
    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1, 0], [6.0, 5, 4, 3, 2, 1, 0], [6.0, 5, 4, 3, 2, 1, 0]])
    labels = torch.tensor([0, 4, 5])
    accuracy = topk_accuracy(logits, labels, ks=(1, 5, 10))
    assert accuracy[1] == pytest.approx(100 / 3)
    assert accuracy[5] == pytest.approx(200 / 3)
    assert accuracy[10] == 100.0  # k above the class count counts as all classes
    assert band_names(32, 4) == ["1-8", "9-16", "17-24", "25-32"]
    empty_band = classification_metrics(logits, labels, torch.randn(3, 4), batch_size=64, num_bands=4)
    assert empty_band.band_counts == (0, 1, 1, 1) and math.isnan(empty_band.band_accuracy[0])
    with pytest.raises(ValueError, match="must match"):
        classification_metrics(logits, labels, torch.randn(2, 4))


def test_eval_pairs_each_srw_run_with_its_own_baseline():
    """20 runs as the demo makes them (KD and DKD, 5 seeds, with and without SRW): no 'last minus first' Δ; each
    method's +SRW runs minus their baselines of the same seed, averaged over the seeds."""
    from mobilesam_srw.eval.cls.evaluate import TEACHER_ROW, paired_runs, report_table
    from mobilesam_srw.metrics import ClassificationMetrics

    def metrics(top1: float) -> ClassificationMetrics:
        return ClassificationMetrics(top1, 100.0, 64, (top1, top1 - 10), (32, 32), ("1-32", "33-64"))

    results = {TEACHER_ROW: metrics(99.0)}
    arms = {TEACHER_ROW: {"method": None, "srw": None, "tau": None, "seed": None}}
    for method, gain in (("kd", 1.0), ("dkd", 3.0)):
        for seed in range(5):
            for srw in (False, True):
                label = f"{method}{'_srw' if srw else ''}_seed{seed}"
                results[label] = metrics(80.0 + seed + (gain if srw else 0.0))
                arms[label] = {"method": method, "srw": srw, "tau": 0.5 if srw else None, "seed": seed}
    assert paired_runs(arms)[:2] == [("kd_srw_seed0", "kd_seed0"), ("kd_srw_seed1", "kd_seed1")]
    table = report_table(results, arms)
    assert "dkd_srw_seed4 - kd_seed0" not in table
    assert "| Δ KD +SRW (tau 0.5) - KD, mean of 5 seeds paired by seed | +1.00 | +0.00 | +1.00 | +1.00 |" in table
    assert "| Δ DKD +SRW (tau 0.5) - DKD, mean of 5 seeds paired by seed | +3.00 |" in table
    two = {label: results[label] for label in (TEACHER_ROW, "kd_seed1", "kd_srw_seed1")}
    assert "| Δ (kd_srw_seed1 - kd_seed1) | +1.00 |" in report_table(two, arms)  # one pair: its own row
    assert "| Δ (kd_srw_seed1 - kd_seed1) |" in report_table(two)  # no records: two runs, the last minus the first
