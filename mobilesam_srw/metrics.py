"""Top-k accuracy and Table 4's tail bands.

Table 4 of the paper measures accuracy by how typical a sample is: the evaluation set is cut,
in its fixed order, into batches of 64; within each batch samples are ranked by the teacher's
average similarity (Eq. 4), highest first; ranks 1-16, 17-32, 33-48 and 49-64 form four bands,
the last one (lowest similarity) being the tail. A band's accuracy pools all batches.

A last batch with fewer than 64 samples (n) is ranked the same way and cut into bands by
quarters of its size: band ``b`` holds ranks ``floor(b*n/4)`` to ``floor((b+1)*n/4) - 1``
(0-based). A last batch of one sample has nothing to be compared with: it counts for top-1/top-5
but in no band.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mobilesam_srw.srw import average_similarity

TABLE4_BATCH_SIZE = 64
TABLE4_BANDS = 4
# How a run's held-out top-1 over its epochs is reported. mdistiller evaluates the test set after every epoch and
# reports the best (its ``best_acc``; the paper's Tables 1-3 follow it); ``last`` is the last epoch's.
TOP1_STATISTICS = {
    "best": "the best held-out top-1 over epochs (mdistiller's best_acc, as Tables 1-3 report)",
    "last": "the last epoch's held-out top-1",
}
DEFAULT_TOP1_STATISTIC = "best"


def over_epochs(values: list[float], statistic: str) -> float:
    """A run's per-epoch held-out top-1 ``values`` (in epoch order) summarised as ``statistic``
    (:data:`TOP1_STATISTICS`): their maximum (``best``) or the last one (``last``)."""
    if statistic not in TOP1_STATISTICS:
        raise ValueError(f"statistic: expected one of {', '.join(TOP1_STATISTICS)}, got {statistic!r}")
    if not values:
        raise ValueError("values: no epochs")
    return max(values) if statistic == "best" else values[-1]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """``[N]`` bool: the label is among the ``k`` largest logits (``k`` capped at the class count)."""
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Percent of samples whose label is in the top ``k`` logits, per ``k``.

    Args:
        logits: ``[N, K]``.
        labels: ``[N]`` class indices.
        ks: the k's; a k above K counts as K.
    """
    _check_lengths(logits, labels)
    if labels.shape[0] == 0:
        raise ValueError("labels: no samples")
    return {k: 100.0 * topk_correct(logits, labels, k).float().mean().item() for k in ks}


def rank_bands(teacher_features: torch.Tensor, num_bands: int = TABLE4_BANDS) -> torch.Tensor:
    """Band of each sample of one batch, 0 = most typical, ``num_bands - 1`` = the tail.

    Args:
        teacher_features: ``[n, D]`` (or ``[n, ...]``, flattened) teacher features of one batch, n >= 2.
        num_bands: bands, cut by quarters (for 4) of the batch size.

    Returns:
        ``[n]`` int64. Ranks follow the average similarity, highest first; ties keep batch order.
    """
    count = teacher_features.shape[0]
    avesim = average_similarity(teacher_features.reshape(count, -1))  # Eq. 4 within the batch
    order = torch.sort(avesim, descending=True, stable=True).indices
    # Rank r (0-based) lies in band b when floor(b*n/B) <= r < floor((b+1)*n/B): b = ceil((r+1)*B/n) - 1.
    band_of_rank = torch.div((torch.arange(count) + 1) * num_bands + count - 1, count, rounding_mode="floor") - 1
    bands = torch.empty(count, dtype=torch.long)
    bands[order.cpu()] = band_of_rank
    return bands


def sample_bands(
    teacher_features: torch.Tensor, batch_size: int = TABLE4_BATCH_SIZE, num_bands: int = TABLE4_BANDS
) -> torch.Tensor:
    """Band of every sample of the evaluation set, in fixed batches of ``batch_size``.

    Args:
        teacher_features: ``[N, D]`` in the evaluation set's order.

    Returns:
        ``[N]`` int64, ``-1`` for a last batch of one sample (no band).
    """
    if batch_size < 2:
        raise ValueError(f"batch_size: must be at least 2, got {batch_size}")
    bands = torch.full((teacher_features.shape[0],), -1, dtype=torch.long)
    for start in range(0, teacher_features.shape[0], batch_size):
        chunk = teacher_features[start : start + batch_size]
        if chunk.shape[0] >= 2:
            bands[start : start + chunk.shape[0]] = rank_bands(chunk, num_bands)
    return bands


def band_names(batch_size: int = TABLE4_BATCH_SIZE, num_bands: int = TABLE4_BANDS) -> list[str]:
    """Table 4's column names, e.g. ``["1-16", "17-32", "33-48", "49-64"]``."""
    edges = [band * batch_size // num_bands for band in range(num_bands + 1)]
    return [f"{edges[b] + 1}-{edges[b + 1]}" for b in range(num_bands)]


@dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracies in percent.

    Attributes:
        top1, top5: over all ``num_samples``.
        band_accuracy: per band (Table 4's columns, most typical first, the tail last); NaN for an empty band.
        band_counts: samples per band.
        band_names: e.g. ``["1-16", "17-32", "33-48", "49-64"]``.
    """

    top1: float
    top5: float
    num_samples: int
    band_accuracy: tuple[float, ...]
    band_counts: tuple[int, ...]
    band_names: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "num_samples": self.num_samples,
            "bands": {name: acc for name, acc in zip(self.band_names, self.band_accuracy)},
            "band_counts": {name: count for name, count in zip(self.band_names, self.band_counts)},
        }


class ClassificationMeter:
    """Accumulates evaluation batches of any size, in the evaluation set's order, for :class:`ClassificationMetrics`.

    Keeps per sample only its correctness and band; teacher features wait only until a fixed
    batch of ``batch_size`` is complete, so ImageNet's 50k features are never held at once.

    Args:
        batch_size: the fixed ranking batches (64 in Table 4).
        num_bands: bands per batch (4 in Table 4).
    """

    def __init__(self, batch_size: int = TABLE4_BATCH_SIZE, num_bands: int = TABLE4_BANDS) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size: must be at least 2, got {batch_size}")
        self.batch_size = batch_size
        self.num_bands = num_bands
        self._top1: list[torch.Tensor] = []
        self._top5: list[torch.Tensor] = []
        self._bands: list[torch.Tensor] = []
        self._pending: list[torch.Tensor] = []  # teacher features of the incomplete batch

    def update(self, logits: torch.Tensor, labels: torch.Tensor, teacher_features: torch.Tensor) -> None:
        """Add the next samples: ``logits [n, K]``, ``labels [n]``, ``teacher_features [n, D]``."""
        _check_lengths(logits, labels)
        if teacher_features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"teacher_features: {teacher_features.shape[0]} samples, labels: {labels.shape[0]}; they must match"
            )
        if labels.shape[0] == 0:
            return
        logits, labels = logits.detach().cpu(), labels.detach().cpu()
        self._top1.append(topk_correct(logits, labels, 1))
        self._top5.append(topk_correct(logits, labels, 5))
        self._pending.append(teacher_features.detach().float().cpu().reshape(labels.shape[0], -1))
        pending = torch.cat(self._pending)
        complete = pending.shape[0] // self.batch_size * self.batch_size
        for start in range(0, complete, self.batch_size):
            self._bands.append(rank_bands(pending[start : start + self.batch_size], self.num_bands))
        self._pending = [pending[complete:]] if complete < pending.shape[0] else []

    def compute(self) -> ClassificationMetrics:
        """The metrics of all samples so far; a last incomplete batch is banded by quarters of its size."""
        if not self._top1:
            raise ValueError("no samples: call update() first")
        bands = list(self._bands)
        if self._pending:
            rest = torch.cat(self._pending)
            bands.append(rank_bands(rest, self.num_bands) if rest.shape[0] >= 2 else torch.full((1,), -1))
        band_of_sample = torch.cat(bands)
        top1, top5 = torch.cat(self._top1), torch.cat(self._top5)
        counts, accuracies = [], []
        for band in range(self.num_bands):
            members = band_of_sample == band
            count = int(members.sum())
            counts.append(count)
            accuracies.append(100.0 * top1[members].float().mean().item() if count else float("nan"))
        return ClassificationMetrics(
            top1=100.0 * top1.float().mean().item(),
            top5=100.0 * top5.float().mean().item(),
            num_samples=int(top1.shape[0]),
            band_accuracy=tuple(accuracies),
            band_counts=tuple(counts),
            band_names=tuple(band_names(self.batch_size, self.num_bands)),
        )


def classification_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_features: torch.Tensor,
    batch_size: int = TABLE4_BATCH_SIZE,
    num_bands: int = TABLE4_BANDS,
) -> ClassificationMetrics:
    """Top-1, top-5 and the tail-band accuracies of a student on the whole evaluation set.

    Args:
        logits: ``[N, K]`` student logits, in the evaluation set's fixed order.
        labels: ``[N]``.
        teacher_features: ``[N, D]`` teacher features of the same samples (e.g. the pooled
            penultimate feature, the one SRW compares); they alone decide the bands, so two
            students evaluated with one teacher are compared on the same bands.
        batch_size: the fixed batches (64 in Table 4).
        num_bands: bands per batch (4 in Table 4).
    """
    meter = ClassificationMeter(batch_size, num_bands)
    meter.update(logits, labels, teacher_features)
    return meter.compute()


def _check_lengths(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits [N, K] and labels [N] expected, got {tuple(logits.shape)} and {tuple(labels.shape)}")
