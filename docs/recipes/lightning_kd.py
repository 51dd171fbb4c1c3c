"""SRW in a Lightning ``LightningModule.training_step``: KD on scikit-learn's digits.

    pip install "mobilesam-srw[recipes]"                    # lightning and transformers
    python docs/recipes/lightning_kd.py                     # one device
    python docs/recipes/lightning_kd.py --devices 2         # DDP: Lightning starts 2 processes (or use torchrun)

Under DDP, ``SRWLoss`` (``scope="global"``) weights each step's samples over all ranks (Eq. 4-6 over the
global batch) and Lightning's gradient averaging gives the gradient of that one objective. With
``accumulate_grad_batches=k``, Lightning averages k micro-batches' losses: each micro-batch, over all
ranks, is then its own SRW group (for the whole step as one group, see ``SRWLoss.accumulate`` in
``docs/srw_loss.md``). The SRW lines are marked ``# SRW``.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mobilesam_srw import SRWLoss, kd_loss


def mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


class SRWDistillation(L.LightningModule):
    """A student distilled from a frozen teacher with KD (Eq. 1) re-weighted by SRW (Eq. 4-6)."""

    def __init__(self, teacher: nn.Sequential, student: nn.Module, tau: float = 0.5, lr: float = 0.03) -> None:
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)  # frozen: DDP leaves it alone
        self.student = student
        self.srw = SRWLoss(tau=tau)  # SRW: scope="global", all ranks' samples form one group
        self.lr = lr

    def on_train_epoch_start(self) -> None:
        self.teacher.eval()  # Lightning puts the whole module in train mode

    def training_step(self, batch, batch_idx):
        inputs, _ = batch
        with torch.no_grad():
            features = self.teacher[:-1](inputs)  # the teacher's penultimate features [B, D]
            teacher_logits = self.teacher[-1](features)
        per_sample = kd_loss(self.student(inputs), teacher_logits, temperature=4.0)  # [B], unreduced
        loss = self.srw(per_sample, features)  # SRW: Eq. 6 over the global batch
        self.log("srw_kd", loss, sync_dist=True, prog_bar=True)  # the ranks' mean: the global batch's Eq. 6
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=self.lr, momentum=0.9)


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
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="samples per device")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tau", type=float, default=0.5, help="Eq. 5's temperature")
    args = parser.parse_args(argv)

    L.seed_everything(0, verbose=False)
    digits = load_digits()
    x, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    module = SRWDistillation(fit_teacher(x, y), mlp(32), tau=args.tau)
    trainer = L.Trainer(max_epochs=args.epochs, devices=args.devices, accelerator="auto",
                        strategy="ddp" if args.devices > 1 else "auto", logger=False, enable_checkpointing=False,
                        enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, drop_last=True))
    with torch.no_grad():
        accuracy = (module.student.cpu()(x).argmax(-1) == y).float().mean().item()
    if trainer.is_global_zero:
        print(f"SRW-KD loss {trainer.callback_metrics['srw_kd'].item():.4f}, student accuracy {accuracy:.3f}")
    return {"loss": trainer.callback_metrics["srw_kd"].item(), "accuracy": accuracy}


if __name__ == "__main__":
    main()
