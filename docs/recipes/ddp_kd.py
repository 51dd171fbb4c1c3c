"""SRW in a plain PyTorch (DDP) training loop: KD on scikit-learn's digits, Eq. 4-6 over the global batch.

    python docs/recipes/ddp_kd.py                                   # one process
    torchrun --nproc-per-node 2 docs/recipes/ddp_kd.py              # 2 ranks: gloo on CPUs, NCCL on GPUs
    torchrun --nproc-per-node 2 docs/recipes/ddp_kd.py --accum 4    # and 4 micro-batches per optimiser step

The SRW group is the global batch, ``--batch-size x ranks x --accum`` samples, whatever the split:
``python ddp_kd.py --batch-size 32`` and ``torchrun --nproc-per-node 2 ddp_kd.py --batch-size 8 --accum 2``
train the same student (the test suite checks it). The SRW lines are marked ``# SRW``.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from mobilesam_srw import SRWLoss, kd_loss


def mlp(width: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


def fit_teacher(x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    """A stand-in for your trained teacher: a wide MLP fitted on the digits in a second."""
    teacher = mlp(256, seed=0)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    return teacher.eval().requires_grad_(False)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=16, help="samples per rank per micro-batch")
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per optimiser step")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tau", type=float, default=0.5, help="Eq. 5's temperature")
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--save", help="write the student's state dict here (rank 0)")
    args = parser.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")

    digits = load_digits()
    x, y = torch.tensor(digits.data / 16, dtype=torch.float32), torch.tensor(digits.target)
    teacher = fit_teacher(x, y).to(device)
    student = mlp(32, seed=1).to(device)
    model = nn.parallel.DistributedDataParallel(student) if world > 1 else student
    optimizer = torch.optim.SGD(student.parameters(), lr=args.lr, momentum=0.9)
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=world, rank=rank, seed=0, drop_last=True)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, sampler=sampler, drop_last=True)
    srw = SRWLoss(tau=args.tau)  # SRW: scope="global", the group spans all ranks

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        batches = iter(loader)
        for _ in range(len(loader) // args.accum):
            micro = [[t.to(device) for t in next(batches)] for _ in range(args.accum)]
            with torch.no_grad():  # the teacher side of every micro-batch first
                features = [teacher[:-1](inputs) for inputs, _ in micro]  # penultimate features [b, 256]
                logits = [teacher[-1](f) for f in features]
            step_loss = torch.zeros((), device=device)
            with srw.accumulate(features):  # SRW: Eq. 4-5 over the step's global batch (one all-reduce, one all-gather)
                for index, ((inputs, _), t_logits, f) in enumerate(zip(micro, logits, features)):
                    last = index == len(micro) - 1
                    with model.no_sync() if world > 1 and not last else contextlib.nullcontext():
                        loss = srw(kd_loss(model(inputs), t_logits, temperature=4.0), f)  # SRW: Eq. 6's share
                        loss.backward()  # not divided by --accum: the shares sum to the step's loss
                    step_loss += loss.detach()
            optimizer.step()
            optimizer.zero_grad()
        if world > 1:
            dist.all_reduce(step_loss)  # the ranks' mean is Eq. 6 over the global batch
            step_loss /= world
        with torch.no_grad():
            accuracy = (student(x.to(device)).argmax(-1).cpu() == y).float().mean().item()
        if rank == 0:
            print(f"epoch {epoch + 1}: SRW-KD loss {step_loss.item():.4f} (last step), student accuracy {accuracy:.3f}")
    if rank == 0 and args.save:
        torch.save(student.state_dict(), args.save)
    if world > 1:
        dist.destroy_process_group()
    return {"loss": step_loss.item(), "accuracy": accuracy}


if __name__ == "__main__":
    main()
