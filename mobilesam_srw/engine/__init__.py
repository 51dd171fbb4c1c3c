"""The training engine every task shares: see :mod:`mobilesam_srw.engine.task` for the seam."""

from mobilesam_srw.engine.config import EngineConfig
from mobilesam_srw.engine.fit import fit
from mobilesam_srw.engine.task import Losses, Targets, Task

__all__ = ["EngineConfig", "Losses", "Targets", "Task", "fit"]
