"""``srw-sam train``: distil SAM's image embeddings into a student with patch-wise SRW (Section 4.3).

One process or many under torchrun (DDP; NCCL on GPUs, gloo on CPUs). The run folder::

    config.json            the run's arguments
    metrics.jsonl          one line per step (loss, lr, samples/s, SRW weight max, data wait) and per validation
    tensorboard/           the same as TensorBoard scalars
    checkpoints/last.pt    latest checkpoint (every --save-every steps and each epoch), for --resume
    checkpoints/epoch_NNN.pt
    student.pt             the trained student (written at the end), for eval and export
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from mobilesam_srw.atomic import write_json
from mobilesam_srw.distributed import distributed_context
from mobilesam_srw.errors import SrwError
from mobilesam_srw.sam import checkpoint
from mobilesam_srw.sam.data import EmbeddingShards, index_shards, resolve_shards
from mobilesam_srw.sam.run_log import RunLogger
from mobilesam_srw.sam.train_config import TrainConfig
from mobilesam_srw.sam.trainer import Trainer

__all__ = ["TrainConfig", "train"]


def _start(trainer: Trainer) -> None:
    """Resume, or refuse to overwrite a run; rank 0 records the configuration."""
    config = trainer.config
    last = config.out / checkpoint.CHECKPOINT_DIR / checkpoint.LAST_CHECKPOINT
    if config.resume:
        trainer.restore(last)
    elif last.exists() or (config.out / checkpoint.STUDENT_FILE).exists():
        raise SrwError(f"{config.out} already holds a run; pass --resume to continue it, or choose another --out")
    if trainer.ctx.is_main:
        config.out.mkdir(parents=True, exist_ok=True)
        write_json(config.out / "config.json", {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()})


def train(config: TrainConfig) -> dict:
    """Train (or resume) a run; returns the last step's metrics and the last validation."""
    config.check()
    config.out = Path(config.out)
    with distributed_context(config.device) as ctx:
        trainer = Trainer(config, ctx)
        validation = None
        if config.val_shards:
            validation = EmbeddingShards(index_shards(resolve_shards(config.val_shards, "--val-shards")),
                                         trainer.dataset.input_size)
        _start(trainer)
        ctx.barrier()
        last_step = min(trainer.total_steps, config.max_steps or trainer.total_steps)
        logger = RunLogger(config.out, enabled=ctx.is_main)
        if ctx.is_main:
            print(f"train: {len(trainer.dataset)} samples, global batch {trainer.plan.global_batch} "
                  f"({config.batch_size} x {ctx.world_size} ranks x {config.grad_accum} accum), "
                  f"{trainer.plan.steps_per_epoch} steps/epoch, {last_step} steps, on {ctx.device}", file=sys.stderr)
        bar = tqdm(total=last_step, initial=trainer.step, unit="step", desc="train",
                   disable=not (config.progress and ctx.is_main))
        metrics, held_out = {}, {}
        try:
            steps_per_epoch = trainer.plan.steps_per_epoch
            while trainer.step < last_step:
                epoch, start = divmod(trainer.step, steps_per_epoch)
                batches = iter(trainer.loader(epoch, start))
                epoch_end = (epoch + 1) * steps_per_epoch
                while trainer.step < min(epoch_end, last_step):
                    metrics = trainer.train_step(batches)
                    logger.log(trainer.step, metrics)
                    bar.set_postfix(loss=f"{metrics['loss']:.4g}", lr=f"{metrics['lr']:.2e}",
                                    samples_s=f"{metrics['samples_per_s']:.1f}")
                    bar.update(1)
                    if trainer.step % config.save_every == 0:
                        trainer.save(checkpoint.LAST_CHECKPOINT)
                if trainer.step == epoch_end:
                    trainer.save(checkpoint.LAST_CHECKPOINT, f"epoch_{epoch + 1:03d}.pt")
                    if validation is not None:
                        held_out = trainer.validate(validation)
                        logger.log(trainer.step, held_out, prefix="val")
        finally:
            bar.close()
            logger.close()
        trainer.save(checkpoint.LAST_CHECKPOINT)
        if ctx.is_main:
            checkpoint.save(config.out / checkpoint.STUDENT_FILE,
                            checkpoint.student_record(trainer.student, steps=trainer.step, tau=config.tau,
                                                      loss=config.loss, normalizer=config.normalizer))
            print(f"train: {trainer.step} steps done; student: {config.out / checkpoint.STUDENT_FILE}", file=sys.stderr)
        ctx.barrier()
        return {**metrics, **{f"val_{k}": v for k, v in held_out.items()}}
