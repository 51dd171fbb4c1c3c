"""SRW in a Hugging Face ``Trainer``: a ``compute_loss`` override, KD on scikit-learn's digits.

    pip install "mobilesam-srw[recipes]"                         # lightning and transformers
    python docs/recipes/hf_trainer_kd.py                         # one process
    torchrun --nproc-per-node 2 docs/recipes/hf_trainer_kd.py    # DDP over 2 processes

Under DDP, ``SRWLoss`` (``scope="global"``) weights each step's samples over all ranks (Eq. 4-6 over the
global batch) and the Trainer's gradient averaging gives the gradient of that one objective. With
``gradient_accumulation_steps=k``, the Trainer divides each micro-batch's loss by k: each micro-batch,
over all ranks, is then its own SRW group (for the whole step as one group, see ``SRWLoss.accumulate`` in
``docs/srw_loss.md``). The Trainer logs rank 0's value, ``world_size x`` its share of Eq. 6. The SRW lines
are marked ``# SRW``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from mobilesam_srw import SRWLoss, kd_loss


def mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


class Digits(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[index], "labels": self.y[index]}


class SRWDistillTrainer(Trainer):
    """A ``Trainer`` whose loss is KD (Eq. 1) from a frozen teacher, re-weighted by SRW (Eq. 4-6)."""

    def __init__(self, *args, teacher: nn.Sequential, tau: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.srw = SRWLoss(tau=tau)  # SRW: scope="global", all ranks' samples form one group

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pixels = inputs["pixel_values"]
        with torch.no_grad():
            features = self.teacher[:-1](pixels)  # the teacher's penultimate features [B, D]
            teacher_logits = self.teacher[-1](features)
        logits = model(pixels)
        loss = self.srw(kd_loss(logits, teacher_logits, temperature=4.0), features)  # SRW: Eq. 6, global batch
        return (loss, {"logits": logits}) if return_outputs else loss


def fit_teacher(x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    """A stand-in for your trained teacher: a wide MLP fitted on the digits in a second."""
    torch.manual_seed(0)
    teacher = mlp(256)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    return teacher


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="samples per device")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tau", type=float, default=0.5, help="Eq. 5's temperature")
    parser.add_argument("--out", help="the Trainer's output folder (default: a temporary one)")
    parser.add_argument("--save", help="write the student's state dict here (rank 0)")
    args = parser.parse_args(argv)

    digits = load_digits()
    x, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    teacher = fit_teacher(x, y)
    torch.manual_seed(1)
    student = mlp(32)
    with tempfile.TemporaryDirectory() as scratch:
        training = TrainingArguments(
            output_dir=args.out or scratch, per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs, lr_scheduler_type="constant", max_grad_norm=0.0,
            dataloader_drop_last=True, remove_unused_columns=False, ddp_find_unused_parameters=False,
            save_strategy="no", report_to=[], logging_steps=20, seed=0, disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
        )
        optimizer = torch.optim.SGD(student.parameters(), lr=0.03, momentum=0.9)
        trainer = SRWDistillTrainer(model=student, args=training, train_dataset=Digits(x, y), teacher=teacher,
                                    tau=args.tau, optimizers=(optimizer, None))
        result = trainer.train()
    with torch.no_grad():
        accuracy = (student.cpu()(x).argmax(-1) == y).float().mean().item()
    if trainer.is_world_process_zero() and args.save:
        torch.save(student.state_dict(), args.save)
    if trainer.is_world_process_zero():
        print(f"SRW-KD loss {result.training_loss:.4f} (mean over training), student accuracy {accuracy:.3f}")
    return {"loss": result.training_loss, "accuracy": accuracy}


if __name__ == "__main__":
    main()
