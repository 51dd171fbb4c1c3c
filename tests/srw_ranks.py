"""SRWLoss on several gloo ranks, each holding a part of one batch (run under torchrun; see ``main``).

The batches and the student are made here from fixed seeds so that the test can compute the one-process
reference on the whole batch: :func:`case` gives a case's whole batch and each rank's share of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mobilesam_srw import SRWLoss

TAU = 0.2
# case name -> the rows of the whole batch each rank holds (per micro-batch), and how the loss is formed
CASES = {
    "halves": [[range(0, 4)], [range(4, 8)]],  # each rank holds half the batch
    "unequal": [[range(0, 5)], [range(5, 8)]],  # 5 and 3 samples
    "accumulate": [[range(0, 2), range(2, 4)], [range(4, 6), range(6, 8)]],  # 2 ranks x 2 micro-batches
    "patches": [[range(0, 3)], [range(3, 5)]],  # patch-wise groups, 3 and 2 images, with padding masks
    "local": [[range(0, 4)], [range(4, 8)]],  # scope="local": each rank's half its own group
}


def student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 3)


def batch(name: str) -> dict[str, torch.Tensor]:
    """The whole batch of a case: inputs, targets, teacher features (fp16 for one case), masks."""
    generator = torch.Generator().manual_seed(1)
    if name == "patches":
        x = torch.randn(5, 7, 5, generator=generator)  # 5 images of 7 patches
        features = torch.randn(5, 7, 6, generator=generator) + 0.5
        mask = torch.ones(5, 7, dtype=torch.bool)
        mask[1, 5:] = False
        mask[4, 3:] = False
        return {"x": x, "target": torch.randn(5, 7, 3, generator=generator), "features": features, "mask": mask}
    features = torch.randn(8, 6, generator=generator) + 0.5
    if name == "unequal":
        features = features.half()  # fp16 teacher features
    return {"x": torch.randn(8, 5, generator=generator), "target": torch.randn(8, 3, generator=generator),
            "features": features}


def per_sample_loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B]`` (or ``[B, N]`` for patches) unreduced MSE."""
    return ((model(x) - target) ** 2).mean(dim=-1)


def scope(name: str) -> str:
    return "local" if name == "local" else "global"


def run(name: str, rank: int, out: Path) -> None:
    data = batch(name)
    model = student()
    ddp = nn.parallel.DistributedDataParallel(model)
    srw = SRWLoss(tau=TAU, scope=scope(name))
    parts = [{key: value[list(rows)] for key, value in data.items()} for rows in CASES[name][rank]]
    if len(parts) == 1:  # the plain call: srw(loss, teacher_features)
        part = parts[0]
        loss = srw(per_sample_loss(ddp, part["x"], part["target"]), part["features"], mask=part.get("mask"))
        loss.backward()
        values = [loss.detach()]
    else:  # gradient accumulation: the teacher side of every micro-batch first
        values = []
        with srw.accumulate([part["features"] for part in parts]):
            for index, part in enumerate(parts):
                with ddp.no_sync() if index < len(parts) - 1 else contextlib.nullcontext():
                    loss = srw(per_sample_loss(ddp, part["x"], part["target"]), part["features"])
                    loss.backward()
                values.append(loss.detach())
    torch.save({"value": torch.stack(values).sum(), **{n: p.grad for n, p in model.named_parameters()}},
               out / f"{name}_{rank}.pt")


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    try:
        for name in CASES:
            run(name, dist.get_rank(), out)
    finally:
        dist.destroy_process_group()
    assert int(os.environ["WORLD_SIZE"]) == 2


if __name__ == "__main__":
    main()
