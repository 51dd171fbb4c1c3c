"""The training state of one run and its optimiser step, for any :class:`~mobilesam_srw.engine.task.Task`.

``batch_size`` is per rank and micro-step; the global batch is ``batch_size * ranks * grad_accum``.
Gradients of micro-steps before the last skip DDP's all-reduce; metrics stay on the device and are
read once per step.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

from mobilesam_srw.atomic import output_subfolder
from mobilesam_srw.distributed import DistributedContext
from mobilesam_srw.engine import checkpoint
from mobilesam_srw.engine.config import EngineConfig, amp_dtype
from mobilesam_srw.engine.optim import build_optimizer
from mobilesam_srw.engine.plan import BatchPlan, EpochItems, MicroBatchSampler
from mobilesam_srw.engine.schedule import build_scheduler
from mobilesam_srw.engine.task import Losses, Task
from mobilesam_srw.engine.weighting import item_weights, step_weights
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import loader_worker_init
from mobilesam_srw.srw import average_similarity, srw_weights

NAMED_SAMPLES = 8  # a non-finite loss names this many of the step's samples


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a collated batch onto ``device`` (non-blocking from pinned memory); other values as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Engine:
    """Owns the trainable module, optimiser, schedule and data order of one run; :func:`fit` drives it.

    Args:
        task: what is distilled (student, teacher, data, per-item losses).
        ctx: this process's place in the job.
    """

    def __init__(self, task: Task, ctx: DistributedContext) -> None:
        self.task, self.config, self.ctx = task, task.config, ctx
        config: EngineConfig = task.config
        self.scope = "image" if task.scope == "image" else config.srw_scope
        self.dataset = task.train_dataset()
        self.plan = BatchPlan(len(self.dataset), config.batch_size, ctx.world_size, config.grad_accum, config.seed)
        if self.plan.steps_per_epoch == 0:
            raise SrwError(f"{len(self.dataset)} samples are fewer than one global batch of {self.plan.global_batch} "
                           f"(--batch-size x ranks x --grad-accum); pass a --batch-size of at most "
                           f"{max(1, len(self.dataset) // (ctx.world_size * config.grad_accum))}")
        if self.scope == "batch" and self.plan.global_batch < 2:
            raise SrwError("SRW over the batch needs a global batch of at least 2 samples")
        if self.scope == "local" and config.batch_size < 2:
            raise SrwError("--srw-scope local needs --batch-size >= 2 (each micro-batch is a group)")
        self.total_steps = self.plan.steps_per_epoch * config.epochs
        torch.manual_seed(config.seed)
        self.module = task.build_student()
        task.to(ctx.device)
        self.module.to(ctx.device)
        self.model = (DistributedDataParallel(self.module, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
                      if ctx.is_distributed else self.module)
        if config.compile:  # checkpoints keep using self.module: its state dict has no compile prefix
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(config, task.param_groups(self.module))
        self.scheduler = build_scheduler(config, self.optimizer, self.plan.steps_per_epoch, self.total_steps)
        self.amp = amp_dtype(config.amp, ctx.device)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp == torch.float16)
        self.step = 0
        self.data_identity = task.data_identity()

    # --- state -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
            "rng": checkpoint.rng_states(), "config": self.config.run_fields(), "data": self.data_identity,
            **self.task.checkpoint_extra(self.module),
        }

    def restore(self, state: dict) -> None:
        for name, value in self.config.run_fields().items():
            if state["config"].get(name) != value:
                raise SrwError(f"--resume: the run was started with {name}={state['config'].get(name)!r}, "
                               f"not {value!r}")
        self._check_same_data(state.get("data"))
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        checkpoint.set_rng_states(state["rng"])

    def _check_same_data(self, recorded: dict | None) -> None:
        """Refuse to resume on other data (or another teacher file) than the run started with, naming it;
        a checkpoint written before data identities were recorded is not checked."""
        if not recorded:
            return
        for name in sorted(set(recorded) | set(self.data_identity)):
            was, now = recorded.get(name), self.data_identity.get(name)
            if was is None or now is None:
                raise SrwError(f"--resume: the run was started {'without' if was is None else 'with'} {name}"
                               + (f" {was['path']}" if was else "") + ", and is resumed "
                               + ("with " + now["path"] if now else "without it") + "; start a new --out")
            if was["fingerprint"] != now["fingerprint"]:
                moved = "" if was["path"] != now["path"] else " (the same path, other content)"
                raise SrwError(f"--resume: the run was started with {name} {was['path']} (fingerprint "
                               f"{was['fingerprint'][:12]}), not {now['path']} ({now['fingerprint'][:12]}){moved}; "
                               "resume with the data it started with, or start a new --out")

    def save(self, *names: str) -> None:
        if self.ctx.is_main:
            state = self.state()
            folder = output_subfolder(self.config.out / checkpoint.CHECKPOINT_DIR)  # a planted link is refused
            for name in names:
                checkpoint.save(folder / name, state)

    @property
    def epoch(self) -> int:
        return self.step // self.plan.steps_per_epoch

    def autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    # --- the step ----------------------------------------------------------------------
    def _objective(self, losses: Losses, sample: torch.Tensor | None,
                   items: torch.Tensor | None) -> tuple[torch.Tensor, list]:
        """This micro-batch's share of the global objective (Eq. 6 plus plain-mean extras) and its parts."""
        per_sample = (losses.distill if items is None else losses.distill.float() * items).float()
        per_sample = per_sample if per_sample.ndim == 1 else per_sample.sum(dim=-1)
        distill = per_sample.sum() / self.plan.global_batch if sample is None else (sample * per_sample).sum()
        extras = [losses.extra[name].float().sum() / self.plan.global_batch for name in sorted(losses.extra)]
        objective = distill + sum(extras)
        return objective, [objective, distill, *extras]

    def train_step(self, batches) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns its metrics."""
        started, waited = time.perf_counter(), 0.0
        micro_batches = []
        for _ in range(self.config.grad_accum):
            before = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - before
            micro_batches.append(to_device(batch, self.ctx.device))
        with torch.no_grad(), self.autocast():  # phase 1: the teacher side of every micro-batch
            targets = [self.task.targets(batch) for batch in micro_batches]
        weights = step_weights(targets, self.scope, self.config.tau, self.config.weight_normalizer, self.ctx,
                               self.plan.global_batch)  # phase 2: SRW weights (Eq. 4-5)
        parts, names = None, []
        for index, (batch, target) in enumerate(zip(micro_batches, targets)):  # phase 3: student side
            sync = index == len(micro_batches) - 1 or not self.ctx.is_distributed
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with self.autocast():
                    losses = self.task.losses(self.model, batch, target, self.epoch)
                objective, terms = self._objective(losses, weights.sample[index], weights.item[index])
                self.scaler.scale(objective * self.ctx.world_size).backward()
            terms = torch.stack([t.detach() for t in terms])
            parts = terms if parts is None else parts + terms
            names = sorted(losses.extra)
        stats = weights.stats
        summary = torch.cat([parts, torch.stack([stats.max_weight, stats.tail_weight, stats.groups])])
        if self.ctx.is_distributed:
            dist.all_reduce(summary)
        values = summary.tolist()  # the step's one host synchronisation
        if not math.isfinite(values[0]):
            keys = [key for batch in micro_batches for key in batch.get("key", [])]
            shown = ", ".join(map(str, keys[:NAMED_SAMPLES])) + (f" (+{len(keys) - NAMED_SAMPLES} more)"
                                                                  if len(keys) > NAMED_SAMPLES else "")
            raise SrwError(f"loss is {values[0]} at step {self.step + 1}; samples: {shown}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step += 1
        seconds = time.perf_counter() - started
        groups = max(values[-1], 1.0)
        return {"loss": values[0], "distill": values[1], **dict(zip(names, values[2:-3])), "lr": lr,
                "samples_per_s": self.plan.global_batch / seconds, "srw_weight_max": values[-3] / groups,
                "srw_tail_weight": values[-2] / groups, "data_wait_fraction": waited / seconds}

    # --- data and validation -------------------------------------------------------------
    def loader(self, epoch: int, start_step: int) -> DataLoader:
        """The rest of ``epoch`` from ``start_step``: each item drawn with its own seed (random augmentation is
        a function of seed, epoch and sample, whichever worker reads it and wherever a run resumed), and the
        loader's own seed from a generator of its own (the run's RNG is left as the checkpoint holds it)."""
        return DataLoader(EpochItems(self.dataset, self.config.seed, epoch),
                          batch_sampler=MicroBatchSampler(self.plan, epoch, self.ctx.rank, start_step),
                          num_workers=self.config.workers, pin_memory=self.ctx.device.type == "cuda",
                          worker_init_fn=loader_worker_init, generator=self.plan.generator(epoch))

    def _validation_weights(self, target, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample and item weights of one held-out batch; sample-wise groups are the batch itself."""
        normalizer = self.config.weight_normalizer
        if self.scope == "image":
            return torch.ones(size, device=self.ctx.device), item_weights(target.avesim, self.config.tau, normalizer,
                                                                          target.item_mask)
        if size < 2 or target.features is None:
            return torch.ones(size, device=self.ctx.device), None
        weights = srw_weights(average_similarity(target.features), self.config.tau, normalizer)
        return weights * size, None

    @torch.no_grad()
    def validate(self, dataset: Dataset) -> dict[str, float]:
        """Held-out objective, plain (unweighted) distillation loss, extras and task metrics, over all ranks."""
        self.module.eval()
        share = Subset(dataset, range(self.ctx.rank, len(dataset), self.ctx.world_size))
        sums, names = None, []
        for batch in DataLoader(share, batch_size=self.config.batch_size, num_workers=self.config.workers,
                                worker_init_fn=loader_worker_init):
            batch = to_device(batch, self.ctx.device)
            with self.autocast():
                target = self.task.targets(batch)
                losses = self.task.losses(self.module, batch, target, self.epoch)
            distill = losses.distill.float()
            size = distill.shape[0]
            sample, items = self._validation_weights(target, size)
            weighted = distill if items is None else (distill * items).sum(dim=-1)
            plain = distill if distill.ndim == 1 else distill.mean(dim=-1)
            extras = [losses.extra[k].float() for k in sorted(losses.extra)]
            metrics = [losses.metrics[k].float() for k in sorted(losses.metrics)]
            objective = sample * weighted + sum(extras)
            row = torch.stack([objective.sum(), plain.sum(), *(v.sum() for v in extras + metrics),
                               torch.tensor(float(size), device=self.ctx.device)])
            sums = row if sums is None else sums + row
            names = ["loss", self.task.plain_loss_name, *sorted(losses.extra), *sorted(losses.metrics)]
        if sums is None:
            raise SrwError("the validation data hold no samples")
        if self.ctx.is_distributed:
            dist.all_reduce(sums)
        self.module.train()
        values = sums.tolist()
        return {name: value / values[-1] for name, value in zip(names, values[:-1])}
