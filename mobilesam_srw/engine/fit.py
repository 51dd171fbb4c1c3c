"""Run a task on the engine: the run folder, resume, the epoch loop, logs, checkpoints, the student file.

One process or many under torchrun (DDP; NCCL on GPUs, gloo on CPUs). The run folder::

    config.json            the run's settings, with its global batch (batch_size x ranks x grad_accum) and ranks
    metrics.jsonl          one line per step (loss and its terms, lr, samples/s, SRW weight max and tail share,
                           data wait) and per validation
    tensorboard/           the same as TensorBoard scalars
    checkpoints/last.pt    latest checkpoint (every --save-every steps and each epoch), for --resume
    checkpoints/epoch_NNN.pt
    student.pt             the trained student (written at the end)
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from mobilesam_srw.atomic import write_json
from mobilesam_srw.distributed import distributed_context
from mobilesam_srw.engine import checkpoint
from mobilesam_srw.engine.engine import Engine
from mobilesam_srw.engine.run_log import RunLogger
from mobilesam_srw.engine.task import Task
from mobilesam_srw.errors import SrwError
from mobilesam_srw.lock import output_lock
from mobilesam_srw.threads import cpu_threads, threads_beside

CONFIG_FILE = "config.json"


def _json_value(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _start(engine: Engine) -> None:
    """Resume, or refuse to overwrite a run; rank 0 records the configuration (under the folder's lock)."""
    config = engine.config
    last = config.out / checkpoint.CHECKPOINT_DIR / checkpoint.LAST_CHECKPOINT
    if config.resume:
        engine.restore(checkpoint.load(last))
    elif last.exists() or (config.out / checkpoint.STUDENT_FILE).exists():
        raise SrwError(f"{config.out} already holds a run; pass --resume to continue it, or choose another --out")
    if engine.ctx.is_main:
        checkpoint.clean_checkpoint_folder(config.out)
        write_json(config.out / CONFIG_FILE, {**recorded_config(config), "global_batch": engine.plan.global_batch,
                                              "ranks": engine.ctx.world_size})


def recorded_config(config) -> dict:
    """``config.json``: the run's settings, without the options its task does not use (``UNUSED_OPTIONS``)."""
    unused = set(getattr(type(config), "UNUSED_OPTIONS", ()))
    return {k: _json_value(v) for k, v in asdict(config).items() if k not in unused}


def fit(task: Task) -> dict:
    """Train (or resume) ``task``'s run; returns the last step's metrics and the last validation (``val_*``)."""
    config = task.config  # checked when the task was made (Task.__init__)
    config.out = Path(config.out)
    with distributed_context(config.device) as ctx, cpu_threads(threads_beside(config.workers)):
        engine = Engine(task, ctx)
        validation = task.val_dataset()
        with output_lock(config.out, ctx):
            _start(engine)
            return _train(engine, validation)


def _report_held_out(task: Task, epoch: int, epochs: int, held_out: dict, best: tuple[float, int] | None
                     ) -> tuple[float, int]:
    """Print the epoch's held-out loss (and the plain distillation loss) with the lowest so far; returns that."""
    loss = held_out["loss"]
    best = (loss, epoch) if best is None or loss < best[0] else best
    plain = held_out.get(task.plain_loss_name)
    tqdm.write(f"train: epoch {epoch}/{epochs}: held-out loss {loss:.5g}"
               + (f" (plain {task.plain_loss_name} {plain:.5g})" if plain is not None else "")
               + f"; lowest so far {best[0]:.5g} at epoch {best[1]} (checkpoints/epoch_{best[1]:03d}.pt)",
               file=sys.stderr)
    return best


def _train(engine: Engine, validation) -> dict:
    """The epoch loop of a started run; returns the last step's metrics and the last validation."""
    task, config, ctx = engine.task, engine.config, engine.ctx
    ctx.barrier()
    last_step = min(engine.total_steps, config.max_steps or engine.total_steps)
    logger = RunLogger(config.out, start_step=engine.step, enabled=ctx.is_main)
    if ctx.is_main:
        print(f"train: {task.describe()}; {len(engine.dataset)} samples, global batch {engine.plan.global_batch} "
              f"({config.batch_size} x {ctx.world_size} ranks x {config.grad_accum} accum), "
              f"{engine.plan.steps_per_epoch} steps/epoch, {last_step} steps, on {ctx.device}", file=sys.stderr)
    bar = tqdm(total=last_step, initial=engine.step, unit="step", desc="train",
               disable=not (config.progress and ctx.is_main))
    metrics, held_out, best = {}, {}, None
    try:
        steps_per_epoch = engine.plan.steps_per_epoch
        while engine.step < last_step:
            epoch, start = divmod(engine.step, steps_per_epoch)
            batches = iter(engine.loader(epoch, start))
            epoch_end = (epoch + 1) * steps_per_epoch
            while engine.step < min(epoch_end, last_step):
                metrics = engine.train_step(batches)
                logger.log(engine.step, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", lr=f"{metrics['lr']:.2e}",
                                samples_s=f"{metrics['samples_per_s']:.1f}")
                bar.update(1)
                if engine.step % config.save_every == 0:
                    engine.save(checkpoint.LAST_CHECKPOINT)
            if engine.step == epoch_end:
                engine.save(checkpoint.LAST_CHECKPOINT, f"epoch_{epoch + 1:03d}.pt")
                if validation is not None:
                    held_out = engine.validate(validation)
                    logger.log(engine.step, held_out, prefix="val")
                    if ctx.is_main:
                        best = _report_held_out(task, epoch + 1, config.epochs, held_out, best)
    finally:
        bar.close()
        logger.close()
    engine.save(checkpoint.LAST_CHECKPOINT)
    if ctx.is_main:
        checkpoint.save(config.out / checkpoint.STUDENT_FILE,
                        {**task.student_record(engine.module), "steps": engine.step, "seed": config.seed, "tau": config.tau,
                         "normalizer": config.weight_normalizer})
        print(f"train: {engine.step} steps done; student: {config.out / checkpoint.STUDENT_FILE}", file=sys.stderr)
    ctx.barrier()
    return {**metrics, **{f"val_{k}": v for k, v in held_out.items()}}
