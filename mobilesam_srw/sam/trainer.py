"""The training state of one run: model, optimiser, schedule, data order, and one step.

``batch_size`` is per rank and micro-step; the global batch is ``batch_size * ranks *
grad_accum``. Gradients of micro-steps before the last skip DDP's all-reduce.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.data import (
    BatchPlan,
    EmbeddingShards,
    MicroBatchSampler,
    embedding_shape_of,
    index_shards,
    resolve_shards,
)
from mobilesam_srw.sam.loss import embedding_loss
from mobilesam_srw.sam.student import EMBEDDING_STRIDE, SamStudent, build_student
from mobilesam_srw.sam.train_config import TrainConfig, amp_dtype, warmup_cosine
from mobilesam_srw.sam.transforms import normalize_padded, valid_patch_mask


def _load_init(student: SamStudent, path: Path) -> None:
    from mobilesam_srw.sam.mobilesam_format import load_mobilesam_into

    record = checkpoint.load(path / checkpoint.STUDENT_FILE if Path(path).is_dir() else path)
    if "model" in record and "student" in record:
        student.load_state_dict(record["model"])
    else:
        load_mobilesam_into(student, record)


class Trainer:
    """Owns the model, optimiser, schedule and data order of one run; ``train.train`` drives it."""

    def __init__(self, config: TrainConfig, ctx: DistributedContext) -> None:
        self.config, self.ctx = config, ctx
        samples = index_shards(resolve_shards(config.shards))
        embedding_shape = embedding_shape_of(samples)
        self.dataset = EmbeddingShards(samples, input_size=embedding_shape[-1] * EMBEDDING_STRIDE)
        torch.manual_seed(config.seed)
        self.student = build_student(config.student, self.dataset.input_size)
        if self.student.embedding_shape != embedding_shape:
            raise SrwError(f"shard embeddings are {list(embedding_shape)} but student {config.student} outputs "
                           f"{list(self.student.embedding_shape)}")
        self.plan = BatchPlan(len(self.dataset), config.batch_size, ctx.world_size, config.grad_accum, config.seed)
        if self.plan.steps_per_epoch == 0:
            raise SrwError(f"{len(self.dataset)} samples are fewer than one global batch of {self.plan.global_batch}")
        self.total_steps = self.plan.steps_per_epoch * config.epochs
        if config.init:
            _load_init(self.student, Path(config.init))
        self.student.to(ctx.device)
        self.model = (DistributedDataParallel(self.student, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
                      if ctx.is_distributed else self.student)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        warmup = int(config.warmup * self.total_steps) if config.warmup < 1 else int(config.warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(self.total_steps, warmup))
        self.amp = amp_dtype(config.amp, ctx.device)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp == torch.float16)
        self.step = 0

    # --- state -------------------------------------------------------------------------
    def state(self) -> dict:
        return checkpoint.student_record(
            self.student, optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), step=self.step, rng=checkpoint.rng_states(),
            config={name: getattr(self.config, name) for name in TrainConfig.RUN_FIELDS},
        )

    def restore(self, path: Path) -> None:
        state = checkpoint.load(path)
        for name in TrainConfig.RUN_FIELDS:
            if state["config"].get(name) != getattr(self.config, name):
                raise SrwError(f"--resume: the run was started with {name}={state['config'].get(name)!r}, "
                               f"not {getattr(self.config, name)!r}")
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        checkpoint.set_rng_states(state["rng"])

    def save(self, *names: str) -> None:
        if self.ctx.is_main:
            state = self.state()
            for name in names:
                checkpoint.save(self.config.out / checkpoint.CHECKPOINT_DIR / name, state)

    # --- steps -------------------------------------------------------------------------
    def _forward(self, batch: dict, model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        """Student and teacher embeddings ``[B, C, H, W]``, avesim ``[B, H*W]``, valid patches (or None)."""
        device = self.ctx.device
        sizes = batch["size"].to(device)
        images = normalize_padded(batch["image"].to(device, non_blocking=True), sizes)
        with torch.autocast(device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            predicted = model(images)
        teacher = batch["embedding"].to(device, non_blocking=True).float()
        valid = valid_patch_mask(sizes, teacher.shape[-1]) if self.config.ignore_padding else None
        return predicted.float(), teacher, batch["avesim"].to(device), valid

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        predicted, teacher, avesim, valid = self._forward(batch, self.model)
        return embedding_loss(predicted, teacher, self.config.tau, self.config.weight_normalizer, avesim, valid)

    @torch.no_grad()
    def validate(self, dataset: EmbeddingShards) -> dict[str, float]:
        """Mean held-out loss (the training objective) and plain MSE, over all ranks' shares."""
        self.student.eval()
        share = torch.utils.data.Subset(dataset, range(self.ctx.rank, len(dataset), self.ctx.world_size))
        sums = torch.zeros(3, device=self.ctx.device)
        for batch in DataLoader(share, batch_size=self.config.batch_size, num_workers=self.config.workers):
            predicted, teacher, avesim, valid = self._forward(batch, self.student)
            count = predicted.shape[0]
            objective, _ = embedding_loss(predicted, teacher, self.config.tau, self.config.weight_normalizer,
                                          avesim, valid)
            sums += torch.stack([objective * count, torch.nn.functional.mse_loss(predicted, teacher) * count,
                                 torch.tensor(float(count), device=sums.device)])
        if self.ctx.is_distributed:
            dist.all_reduce(sums)
        self.student.train()
        return {"loss": (sums[0] / sums[2]).item(), "mse": (sums[1] / sums[2]).item()}

    def train_step(self, batches) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns its metrics."""
        started, waited, total, weight_max, keys = time.perf_counter(), 0.0, 0.0, 0.0, []
        accum = self.config.grad_accum
        for micro in range(accum):
            before = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - before
            keys += batch["key"]
            sync = micro == accum - 1 or not self.ctx.is_distributed
            with contextlib.nullcontext() if sync else self.model.no_sync():
                loss, weights = self._loss(batch)
                self.scaler.scale(loss / accum).backward()
            total += loss.detach() / accum
            weight_max += weights.max(dim=-1).values.mean().item() / accum
        if self.ctx.is_distributed:
            dist.all_reduce(total)
            total /= self.ctx.world_size
        if not torch.isfinite(total):
            raise SrwError(f"loss is {total.item()} at step {self.step + 1}; samples: {', '.join(keys)}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step += 1
        seconds = time.perf_counter() - started
        return {"loss": total.item(), "lr": lr, "samples_per_s": self.plan.global_batch / seconds,
                "srw_weight_max": weight_max, "srw_weight_mean": 1.0 / weights.shape[-1],
                "data_wait_fraction": waited / seconds}

    def loader(self, epoch: int, start_step: int) -> DataLoader:
        return DataLoader(self.dataset, batch_sampler=MicroBatchSampler(self.plan, epoch, self.ctx.rank, start_step),
                          num_workers=self.config.workers, pin_memory=self.ctx.device.type == "cuda")
