"""A toy task for the engine's tests: a linear student learns a fixed linear teacher on random data.

``scope="batch"``: each sample is one vector; the teacher's output is the SRW feature.
``scope="image"``: each sample holds 6 items (an "image" of 6 patches), weighted within the sample.
Run as a script under torchrun to train one configuration (see ``main``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from mobilesam_srw.engine import EngineConfig, Losses, Targets, Task, fit
from mobilesam_srw.options import option
from mobilesam_srw.srw import average_similarity

DIM, OUT, ITEMS = 8, 5, 6


@dataclass(kw_only=True)
class ToyConfig(EngineConfig):
    samples: int = option(48, help="samples in the toy set")
    srw: bool = option(True, help="re-weight")
    scope: str = option("batch", help="batch or image", choices=("batch", "image"))

    @property
    def uses_srw(self) -> bool:
        return self.srw


class ToyData(Dataset):
    def __init__(self, count: int, image: bool) -> None:
        generator = torch.Generator().manual_seed(1234)
        shape = (count, ITEMS, DIM) if image else (count, DIM)
        self.inputs = torch.randn(*shape, generator=generator)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.inputs[index], "key": f"toy_{index}"}


class ToyTask(Task):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        self.scope = "image" if config.scope == "image" else "batch"
        self.teacher = nn.Linear(DIM, OUT)
        with torch.no_grad():
            generator = torch.Generator().manual_seed(99)
            self.teacher.weight.copy_(torch.randn(OUT, DIM, generator=generator))
            self.teacher.bias.copy_(torch.randn(OUT, generator=generator))

    def train_dataset(self) -> Dataset:
        return ToyData(self.config.samples, self.scope == "image")

    def build_student(self) -> nn.Module:
        return nn.Linear(DIM, OUT)

    def to(self, device):
        self.teacher.to(device)
        return self

    def targets(self, batch: dict) -> Targets:
        out = self.teacher(batch["x"])
        if self.scope == "image":
            return Targets(avesim=average_similarity(out), data=out)
        return Targets(features=out, data=out)

    def losses(self, model, batch, targets, epoch) -> Losses:
        out = model(batch["x"])
        per_item = ((out - targets.data) ** 2).mean(dim=-1)  # [B] or [B, ITEMS]
        extra = {"l2": 0.01 * (out ** 2).flatten(1).mean(dim=-1)}
        return Losses(distill=per_item, extra=extra, metrics={"close": (per_item.reshape(len(out), -1).mean(-1) < 1).float()})

    def student_record(self, module) -> dict:
        return {"model": module.state_dict()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", help="JSON of ToyConfig fields")
    values = json.loads(parser.parse_args().config)
    values["out"] = Path(values["out"])
    fit(ToyTask(ToyConfig(**values)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
