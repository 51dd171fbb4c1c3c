"""The held-out split: planned samples the student never sees, encoded by the same teacher.

``--val-fraction F`` holds out ``ceil(F * N)`` of the N planned samples (after ``--subset`` and
``--limit``), ranked by a seeded hash of their keys that is independent of the subset's
ranking; ``--val-keys FILE`` holds out the keys a file lists (each must be planned). Either
way the choice depends only on the keys and the seed, so a rerun splits the same way and
resumes both folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobilesam_srw.data_prep.plan import Plan
from mobilesam_srw.data_prep.subset import (
    Subset,
    check_listed_names_found,
    choose,
    read_names,
)
from mobilesam_srw.errors import SrwError

_SALT = "held-out:"


@dataclass(frozen=True)
class HeldOut:
    """Which planned samples go to the held-out folder: a ``fraction`` in (0, 1) or listed ``keys``."""

    fraction: float | None = None
    keys: frozenset[str] | None = None

    def record(self) -> dict:
        """For the run record: the rule, not the keys."""
        return {"fraction": self.fraction} if self.fraction is not None else {"listed_keys": len(self.keys)}


def parse_held_out(fraction: float | None, keys_file: Path | None) -> HeldOut | None:
    """``--val-fraction`` or ``--val-keys`` (at most one); None when neither is given."""
    if fraction is not None and keys_file is not None:
        raise SrwError("give --val-fraction or --val-keys, not both")
    if fraction is not None:
        if not 0 < fraction < 1:  # also refuses NaN
            raise SrwError(f"--val-fraction must be in (0, 1), got {fraction}")
        return HeldOut(fraction=float(fraction))
    if keys_file is not None:
        if not Path(keys_file).is_file():
            raise SrwError(f"--val-keys: no such file: {keys_file}")
        return HeldOut(keys=read_names(keys_file, "--val-keys"))
    return None


def split_plan(plan: Plan, held_out: HeldOut, seed: int) -> tuple[Plan, Plan]:
    """(training plan, held-out plan), both in the plan's order; the skips stay with training."""
    keys = [sample.key for sample in plan.samples]
    if held_out.keys is not None:
        chosen = choose(keys, Subset(names=held_out.keys), seed)
        check_listed_names_found(Subset(names=held_out.keys), chosen, "--val-keys")
    else:
        chosen = choose(keys, Subset(fraction=held_out.fraction), seed, salt=_SALT)
    training = [sample for sample in plan.samples if sample.key not in chosen]
    if not training:
        raise SrwError(f"the held-out split takes all {len(keys)} planned samples; none are left for training")
    validation = [sample for sample in plan.samples if sample.key in chosen]
    return Plan(training, plan.skipped, plan.shard_size), Plan(validation, [], plan.shard_size)
