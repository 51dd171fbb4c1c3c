"""One planned sample -> what its shard stores, or a skip with its reason (every task's precompute).

Whatever goes wrong with one sample (reading, decoding, parsing, validating, resizing) skips it
with its reason; only faults of the run itself (output folder, teacher, device) are raised by
the driver. Each task's precompute subclasses :class:`PlannedSamples` with its own ``prepare``.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from mobilesam_srw.data_prep.sources import BadSample, ImageLimits, SampleRef

_MAX_REASON = 300


def skip_reason(error: Exception) -> str:
    """One line for the manifest: a :class:`BadSample`'s own message, else the error's type and message."""
    text = str(error) if isinstance(error, BadSample) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


class PlannedSamples(Dataset):
    """Planned ``(shard, ref)`` pairs -> each sample prepared for its shard, or a skip with its reason:
    the one place where any fault of one sample (reading, decoding, validating, resizing) becomes its
    skip record. A source's preparation is :meth:`prepare`.

    Args:
        items: :func:`~mobilesam_srw.data_prep.shard_encoding.planned_items`.
        limits: file size and pixel limits.
    """

    def __init__(self, items: list[tuple[int, SampleRef]], limits: ImageLimits) -> None:
        self.items = items
        self.limits = limits

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict:
        shard, ref = self.items[position]
        base = {"shard": shard, "key": ref.key, "source": ref.source}
        try:
            return {**base, **self.prepare(ref, ref.load(self.limits))}
        except Exception as error:  # any fault of this one sample skips it (MemoryError of a huge image too)
            return {**base, "skip": skip_reason(error)}

    def prepare(self, ref: SampleRef, sample) -> dict:
        """The fields of one loaded sample for the encoder hook; raise to skip it."""
        raise NotImplementedError
